"""Blocked (banded) sliding-window attention in PyTorch: O(T * w) time and memory.

The sequence is cut into query blocks of C tokens. Query block n only needs the keys of its own
block and of the P = ceil((w - 1) / C) blocks before it: a band of S = (P + 1) * C <= w + 2C keys.
Scores are [B, Hk, T / C, G * C, S] = O(T * (w + C)) elements per head, never T x T. A boolean
mask [T / C, C, S] (no batch or head axis) removes keys outside [i - w + 1, i], the zero padding
before token 0, and keys of other packed sequences. Autograd runs through it; every saved tensor
and every gradient is O(T * S) as well.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MIN_BLOCK, MAX_BLOCK = 32, 128


def block_size(window: int, T: int) -> int:
    """Query block length C ~ w / 2 within [MIN_BLOCK, MAX_BLOCK] and at most T.

    Smaller blocks waste fewer scores (S / w ~ 1 + C / w) but make more, smaller matmuls.
    """
    return max(1, min(max(window // 2, MIN_BLOCK), MAX_BLOCK, T))


def band_mask(T: int, C: int, P: int, window: int, seq_id: torch.Tensor | None, device) -> torch.Tensor:
    """Allowed (query, key) pairs of each block: [nb, C, S] bool, S = (P + 1) * C.

    Query c of block n is token i = n * C + c; key s of its band is token j = (n - P) * C + s,
    so i - j = c - s + P * C does not depend on n.
    """
    nb = math.ceil(T / C)
    S = (P + 1) * C
    c = torch.arange(C, device=device)[:, None]
    s = torch.arange(S, device=device)[None, :]
    diff = c - s + P * C
    in_window = (diff >= 0) & (diff < window)  # [C, S]
    j = (torch.arange(nb, device=device)[:, None] - P) * C + s  # [nb, S]
    allowed = in_window[None] & (j >= 0)[:, None, :]
    if seq_id is not None:
        # Padding tokens (from T to nb * C) get their own id, so they only see each other.
        ids = F.pad(seq_id, (0, nb * C - T), value=-1)
        ids_j = F.pad(ids, (P * C, 0), value=-2).unfold(0, S, C)  # [nb, S]
        allowed &= ids.view(nb, C, 1) == ids_j[:, None, :]
    return allowed


def swa_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window_size: int,
    scale: float,
    cu_seqlens: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sliding-window attention by query blocks over a band of keys.

    q: [B, T, H, D]; k, v: [B, T, Hk, D] with H % Hk == 0 (query head h reads kv head h // (H // Hk)).
    cu_seqlens: optional [N + 1] packed-sequence offsets (B == 1). Returns o [B, T, H, D] in q's dtype.
    fp16/bf16 inputs are computed in fp32; fp32 and fp64 in their own precision.
    """
    B, T, H, D = q.shape
    Hk = k.shape[2]
    G = H // Hk
    w = min(window_size, T)
    C = block_size(w, T)
    P = math.ceil((w - 1) / C)
    nb = math.ceil(T / C)
    S = (P + 1) * C
    pad = nb * C - T
    compute = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype

    seq_id = None
    if cu_seqlens is not None:
        tokens = torch.arange(T, device=q.device)
        seq_id = torch.searchsorted(cu_seqlens[1:].to(torch.long), tokens, right=True)
    # 0 where allowed, −inf elsewhere [nb, 1, C, S]: adding it is several times cheaper than a boolean
    # masked_fill_ with the same broadcast
    bias = torch.zeros((), dtype=compute, device=q.device).masked_fill(
        ~band_mask(T, C, P, w, seq_id, q.device), float("-inf"))[:, None]

    # [B, T, H, D] -> [B, Hk, nb, G * C, D]: the G query heads of one kv head share the keys.
    qb = F.pad(q.to(compute) * scale, (0, 0, 0, 0, 0, pad))
    qb = qb.view(B, nb, C, Hk, G, D).permute(0, 3, 1, 4, 2, 5).reshape(B, Hk, nb, G * C, D)

    def band(x: torch.Tensor) -> torch.Tensor:
        """[B, T, Hk, D] -> keys or values of each block's band, [B, Hk, nb, S, D]."""
        xp = F.pad(x.to(compute), (0, 0, 0, 0, P * C, pad))  # [B, (nb + P) * C, Hk, D]
        return xp.unfold(1, S, C).permute(0, 2, 1, 4, 3)  # unfold: [B, nb, Hk, D, S]

    scores = torch.matmul(qb, band(k).transpose(-1, -2)).view(B, Hk, nb, G, C, S)
    # In place: matmul's backward needs its inputs, not its output, so no extra copy is kept.
    scores.add_(bias)
    probs = torch.softmax(scores, dim=-1).view(B, Hk, nb, G * C, S)
    o = torch.matmul(probs, band(v))  # [B, Hk, nb, G * C, D]
    o = o.view(B, Hk, nb, G, C, D).permute(0, 2, 4, 1, 3, 5).reshape(B, nb * C, H, D)
    return o[:, :T].to(q.dtype)
