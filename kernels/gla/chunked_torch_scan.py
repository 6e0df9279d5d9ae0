"""Inter-chunk state passing in PyTorch.

``h_{c+1} = d_c ⊙ h_c + kv_c`` over chunks c, returning every chunk-start state, where d_c is the
decay of the whole chunk (per head, or per key channel: a row scale of the ``[K, V]`` state). One
fused multiply-add per chunk writes each state straight into its slot of the output (no copies, no
per-chunk temporaries). Measured in the whole chunked forward+backward (B4 H4 D64, per-head decay)
this beats a two-level scan with batched decay-matrix matmuls: equal at T=512, 3 % faster at 2048,
7-13 % at 8192. Without decay both scans are cumulative sums.
"""
from __future__ import annotations

import torch


def scan_states(kv: torch.Tensor, decay: torch.Tensor | None, h: torch.Tensor):
    """kv ``[BH, NT, K, V]`` chunk contributions, decay ``[BH, NT, K or 1, 1]`` each chunk's decay
    factor (in (0, 1]) or None (no decay), h ``[BH, K, V]`` the initial state. Returns (states
    ``[BH, NT, K, V]`` at each chunk start, final state ``[BH, K, V]``)."""
    NT = kv.shape[1]
    if NT == 0:
        return kv.clone(), h.clone()
    if decay is None:
        states = kv.cumsum(1).sub_(kv).add_(h[:, None])
        return states, states[:, -1] + kv[:, -1]
    states = torch.empty_like(kv)
    states[:, 0] = h
    for c in range(NT - 1):
        torch.addcmul(kv[:, c], decay[:, c], states[:, c], out=states[:, c + 1])
    return states, torch.addcmul(kv[:, -1], decay[:, -1], states[:, -1])


def scan_states_reverse(U: torch.Tensor, decay: torch.Tensor | None, dht: torch.Tensor):
    """Backward state gradient: ``dh_end[NT-1] = dht``, ``dh_end[c-1] = d_c ⊙ dh_end[c] + U_c`` (shapes
    as in :func:`scan_states`). Returns (dh_end ``[BH, NT, K, V]``, the gradient of the initial state
    ``[BH, K, V]``: the same recurrence one step past chunk 0)."""
    NT = U.shape[1]
    if NT == 0:
        return U.clone(), dht.clone()
    if decay is None:  # dh_end[c] = dht + sum_{c' > c} U_c'
        total = U.sum(1)
        return (total[:, None] - U.cumsum(1)).add_(dht[:, None]), total + dht
    dh_end = torch.empty_like(U)
    dh_end[:, -1] = dht
    for c in range(NT - 1, 0, -1):
        torch.addcmul(U[:, c], decay[:, c], dh_end[:, c], out=dh_end[:, c - 1])
    return dh_end, torch.addcmul(U[:, 0], decay[:, 0], dh_end[:, 0])
