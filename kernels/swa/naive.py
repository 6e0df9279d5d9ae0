"""Reference sliding-window attention: a full T x T masked softmax in fp64, for tests only."""
from __future__ import annotations

import torch


def swa_naive(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window_size: int,
    scale: float,
    cu_seqlens: torch.Tensor | None = None,
    return_lse: bool = False,
):
    """Causal softmax attention where query i sees keys [i - window_size + 1, i].

    q: [B, T, H, D]; k, v: [B, T, Hk, D] with H % Hk == 0 (query head h reads kv head h // (H // Hk)).
    cu_seqlens: optional [N + 1] offsets of packed sequences (B == 1); each one is run alone.
    Returns o [B, T, H, D] in q's dtype and, with ``return_lse``, the natural-log log-sum-exp of
    the scaled scores, [B, T, H] in fp64.
    """
    if cu_seqlens is not None:
        bounds = cu_seqlens.tolist()
        parts = [
            swa_naive(q[:, s:e], k[:, s:e], v[:, s:e], window_size, scale, return_lse=True)
            for s, e in zip(bounds[:-1], bounds[1:])
        ]
        o = torch.cat([p[0] for p in parts], dim=1)
        lse = torch.cat([p[1] for p in parts], dim=1)
        return (o, lse) if return_lse else o

    T = q.shape[1]
    group = q.shape[2] // k.shape[2]
    qd = q.double()
    kd = k.double().repeat_interleave(group, dim=2)
    vd = v.double().repeat_interleave(group, dim=2)
    scores = torch.einsum("bihd,bjhd->bhij", qd, kd) * scale  # [B, H, T, T]
    i = torch.arange(T, device=q.device)[:, None]
    j = torch.arange(T, device=q.device)[None, :]
    allowed = (j <= i) & (i - j < window_size)
    scores = scores.masked_fill(~allowed, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1).transpose(1, 2)  # [B, T, H]
    o = torch.einsum("bhij,bjhd->bihd", torch.softmax(scores, dim=-1), vd).to(q.dtype)
    return (o, lse) if return_lse else o
