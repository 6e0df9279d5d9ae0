"""Reference log-linear attention: the T × T matrix written out from the level partition, in fp64."""

from __future__ import annotations

import torch

from recall_lm.kernels.log_linear.levels import level_table


def log_linear_attention_naive(q, k, v, g, level_scales, scale: float, cu_seqlens=None):
    """``o_t = scale Σ_{c ≤ t} exp(G_t − G_c) λ_t[ℓ(t, c)] (q_t·k_c) v_c`` with G = cumsum(g) per sequence.
    Shapes as in :func:`recall_lm.kernels.log_linear.log_linear_attention`. Returns o in v's dtype."""
    if cu_seqlens is not None:
        b = cu_seqlens.tolist()
        return torch.cat(
            [
                log_linear_attention_naive(
                    q[:, s:e], k[:, s:e], v[:, s:e], g[:, s:e], level_scales[:, s:e], scale
                )
                for s, e in zip(b, b[1:])
            ],
            1,
        )
    T, H = v.shape[1], v.shape[2]
    group = H // q.shape[2]
    qd, kd = (x.double().repeat_interleave(group, 2) for x in (q, k))
    G = g.double().cumsum(1).transpose(1, 2)  # [B, H, T]
    levels = level_table(T, q.device)
    lam = level_scales.double().permute(0, 2, 1, 3)  # [B, H, T, L]
    weight = torch.gather(lam, 3, levels.clamp(min=0).expand(*lam.shape[:2], T, T))  # λ_t[ℓ(t, c)]
    decay = torch.exp((G[..., :, None] - G[..., None, :]).masked_fill(levels < 0, float("-inf")))
    scores = torch.einsum("bthk,bchk->bhtc", qd, kd) * decay * weight
    return (scale * torch.einsum("bhtc,bchv->bthv", scores, v.double())).to(v.dtype)
