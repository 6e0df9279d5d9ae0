"""The Fenwick-tree partition of log-linear attention (Guo et al., 2025, arXiv 2506.04761).

Query t (0-based within its sequence) splits the keys c ≤ t into levels: level 0 is c = t itself, and
key c < t sits at level ℓ(t, c) = bit_length(t XOR c), the position of the highest bit where t and c
differ, plus one. The keys of level ℓ ≥ 1 form one aligned block of 2^{ℓ−1} tokens, present when bit
ℓ − 1 of t is set: the binary decomposition of the prefix [0, t). So query t sees popcount(t) + 1
levels, at most bit_length(T − 1) + 1 for a sequence of T tokens.

    t = 6 (110):  level 0: {6};  level 2: {4, 5};  level 3: {0, 1, 2, 3}
"""

from __future__ import annotations

import torch


def num_levels(T: int) -> int:
    """Levels a sequence of T tokens needs: bit_length(T − 1) + 1 (1 for T ≤ 1)."""
    return max(T - 1, 0).bit_length() + 1


def level_table(T: int, device=None) -> torch.Tensor:
    """``[T, T]`` int64: ℓ(t, c) for c ≤ t, −1 above the diagonal."""
    t = torch.arange(T, device=device)[:, None]
    c = torch.arange(T, device=device)[None, :]
    x = t ^ c
    bits = torch.where(x > 0, torch.floor(torch.log2(x.clamp(min=1).double())).long() + 1, 0)
    return torch.where(c <= t, bits, -1)


def trailing_ones(t: int) -> int:
    """How many low bits of t are set: the levels that merge when token t joins the prefix."""
    return (~t & (t + 1)).bit_length() - 1
