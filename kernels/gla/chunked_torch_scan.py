"""Inter-chunk state passing in PyTorch with few, large operations.

``h_{c+1} = exp(gamma_c) h_c + kv_c`` over chunks c, returning every chunk-start state. A Python loop of
three small ops per chunk is slow on a busy CPU (every op is a parallel region), so scalar decays use a
two-level scan: inside blocks of ``BLOCK`` chunks one batched matmul with the decay matrix (masked before
the exp, exponents <= 0), then a short loop over blocks. Per-channel decays keep the chunk loop.
"""
from __future__ import annotations

import torch

BLOCK = 16


def scan_scalar(kv: torch.Tensor, gamma: torch.Tensor | None, h: torch.Tensor):
    """kv ``[BH, NT, K, V]`` chunk contributions, gamma ``[BH, NT]`` chunk log-decays (<= 0) or None (no
    decay), h ``[BH, K, V]`` the initial state. Returns (states ``[BH, NT, K, V]`` at each chunk start,
    final state ``[BH, K, V]``)."""
    BH, NT, K, V = kv.shape
    if gamma is None:
        states = kv.cumsum(1).sub_(kv).add_(h[:, None])
        return states, states[:, -1] + kv[:, -1] if NT else h.clone()
    kvb, g, block, nb = _blocks(kv, gamma)
    inc = g.cumsum(-1)
    exc = inc - g
    # local[c] = sum_{c' < c} exp(exc_c - inc_c') kv_c' inside the block (decays of chunks c'+1 .. c-1)
    mask = torch.ones(block, block, dtype=torch.bool, device=kv.device).tril(-1)
    W = (exc[..., :, None] - inc[..., None, :]).masked_fill_(~mask, float("-inf")).exp_()
    states = W @ kvb  # [BH, nb, block, K*V]
    ends = (torch.exp(inc[..., -1:] - inc)[..., None, :] @ kvb).squeeze(-2)  # block end from zero state
    block_decay = torch.exp(inc[..., -1])  # [BH, nb]
    starts = torch.empty(BH, nb, K * V, dtype=kv.dtype, device=kv.device)
    h = h.reshape(BH, K * V)
    for b in range(nb):
        starts[:, b] = h
        h = torch.addcmul(ends[:, b], block_decay[:, b, None], h)
    states.addcmul_(torch.exp(exc)[..., None], starts[:, :, None, :])
    return states.view(BH, nb * block, K, V)[:, :NT].contiguous(), h.view(BH, K, V)


def scan_scalar_reverse(U: torch.Tensor, gamma: torch.Tensor | None, dht: torch.Tensor):
    """Backward state gradient: ``dh_end[NT-1] = dht``, ``dh_end[c-1] = exp(gamma_c) dh_end[c] + U_c``.
    Returns (dh_end ``[BH, NT, K, V]``, gradient of the initial state ``[BH, K, V]`` = dh_end[-1]).
    The same two-level scan as :func:`scan_scalar`, run last block to first (no flipped copies)."""
    BH, NT, K, V = U.shape
    if gamma is None:  # dh_end[c] = dht + sum_{c' > c} U_c'
        total = U.sum(1)
        return (total[:, None] - U.cumsum(1)).add_(dht[:, None]), total + dht
    Ub, g, block, nb = _blocks(U, gamma)
    inc = g.cumsum(-1)
    exc = inc - g
    # local[i] = sum_{i' > i} exp(exc_i' - inc_i) U_i' (decays of chunks i+1 .. i'-1); padding sits at the
    # end with U = 0 and gamma = 0, so the carry passes through it unchanged
    mask = torch.ones(block, block, dtype=torch.bool, device=U.device).triu(1)
    W = (exc[..., None, :] - inc[..., :, None]).masked_fill_(~mask, float("-inf")).exp_()
    states = W @ Ub  # [BH, nb, block, K*V]
    ends = (torch.exp(exc)[..., None, :] @ Ub).squeeze(-2)  # the carry out of a block's first chunk
    block_decay = torch.exp(inc[..., -1])
    starts = torch.empty(BH, nb, K * V, dtype=U.dtype, device=U.device)
    h = dht.reshape(BH, K * V)
    for b in range(nb - 1, -1, -1):
        starts[:, b] = h
        h = torch.addcmul(ends[:, b], block_decay[:, b, None], h)
    states.addcmul_(torch.exp(inc[..., -1:] - inc)[..., None], starts[:, :, None, :])
    return states.view(BH, nb * block, K, V)[:, :NT].contiguous(), h.view(BH, K, V)


def _blocks(kv: torch.Tensor, gamma: torch.Tensor):
    """kv ``[BH, NT, K, V]`` and gamma ``[BH, NT]`` zero-padded at the end to whole blocks of BLOCK
    chunks: (kv ``[BH, nb, block, K*V]``, gamma ``[BH, nb, block]``, block, nb)."""
    BH, NT, K, V = kv.shape
    block = min(BLOCK, NT) or 1
    nb = -(-NT // block)
    pad = nb * block - NT
    if pad:
        kv = torch.cat([kv, kv.new_zeros(BH, pad, K, V)], 1)
        gamma = torch.cat([gamma, gamma.new_zeros(BH, pad)], 1)
    return kv.view(BH, nb, block, K * V), gamma.view(BH, nb, block), block, nb
