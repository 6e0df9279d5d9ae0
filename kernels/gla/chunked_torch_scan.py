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
    block = min(BLOCK, NT) or 1
    nb = -(-NT // block)
    pad = nb * block - NT
    if pad:
        kv = torch.cat([kv, kv.new_zeros(BH, pad, K, V)], 1)
        gamma = torch.cat([gamma, gamma.new_zeros(BH, pad)], 1)
    kvb = kv.view(BH, nb, block, K * V)
    g = gamma.view(BH, nb, block)
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
    Returns (dh_end ``[BH, NT, K, V]``, gradient of the initial state ``[BH, K, V]``)."""
    states, first = scan_scalar(U.flip(1), None if gamma is None else gamma.flip(1), dht)
    return states.flip(1), first
