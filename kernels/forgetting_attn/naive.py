"""Reference forgetting attention: the full T × T masked softmax in fp64, for tests only."""
from __future__ import annotations

import torch


def forgetting_attention_naive(q, k, v, g, scale: float, window_size: int | None = None, cu_seqlens=None):
    """``o_i = Σ_{j ≤ i} softmax_j(scale q_i·k_j + c_i − c_j) v_j`` with ``c_t = Σ_{l ≤ t} g_l`` (Lin et al.,
    ICLR 2025), keys limited to ``[i − window_size + 1, i]`` when a window is given.

    q: ``[B, T, H, D]``; k: ``[B, T, Hk, D]``, v: ``[B, T, Hk, Dv]`` with Hk dividing H; g: ``[B, T, H]``
    log forget gates (≤ 0). cu_seqlens: optional ``[N + 1]`` packed-sequence offsets (B = 1), each
    sequence run alone. Returns o ``[B, T, H, Dv]`` in q's dtype."""
    if cu_seqlens is not None:
        bounds = cu_seqlens.tolist()
        return torch.cat([forgetting_attention_naive(q[:, s:e], k[:, s:e], v[:, s:e], g[:, s:e], scale,
                                                     window_size) for s, e in zip(bounds, bounds[1:])], 1)
    T = q.shape[1]
    group = q.shape[2] // k.shape[2]
    qd, gd = q.double(), g.double()
    kd = k.double().repeat_interleave(group, dim=2)
    vd = v.double().repeat_interleave(group, dim=2)
    c = gd.cumsum(1).transpose(1, 2)  # [B, H, T]
    scores = torch.einsum("bihd,bjhd->bhij", qd, kd) * scale + c[..., :, None] - c[..., None, :]
    i = torch.arange(T, device=q.device)[:, None]
    j = torch.arange(T, device=q.device)[None, :]
    allowed = (j <= i) if window_size is None else (j <= i) & (i - j < window_size)
    scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.einsum("bhij,bjhd->bihd", torch.softmax(scores, dim=-1), vd).to(q.dtype)
