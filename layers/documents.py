"""Documents packed along one row (document-masked packing): what the mixers need to keep them apart.

``DecoderLM.forward(input_ids [1, T], cu_seqlens=...)`` builds one :class:`Documents` per forward and
hands it to every mixer (``forward(x, state=None, documents=...)``) and stateful MLP. Each mixer then
treats every document as its own sequence: the recurrent ops get ``cu_seqlens``; token shifts and short
convolutions never reach back across a start (``token_shift``, ``ShortConvolution``); softmax
attention runs per document (:meth:`Documents.split`); rotary positions restart (``positions``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Documents:
    """cu_seqlens: int32 ``[N+1]`` offsets of the N documents of a row of T tokens; lengths: N Python
    ints; index: ``[T]`` long, each token's document; positions: ``[T]`` long, each token's index within
    its document; starts: ``[T]`` bool, True at the first token of each document."""

    cu_seqlens: torch.Tensor
    lengths: tuple[int, ...]
    index: torch.Tensor
    positions: torch.Tensor
    starts: torch.Tensor

    @classmethod
    def from_cu_seqlens(cls, cu_seqlens: torch.Tensor, total_len: int, device=None) -> "Documents":
        """Validate ``cu_seqlens`` (integer, 1-D, from 0 to ``total_len``, non-decreasing)."""
        if not isinstance(cu_seqlens, torch.Tensor) or cu_seqlens.ndim != 1 or cu_seqlens.numel() < 2:
            raise ValueError("cu_seqlens must be a 1-D integer tensor [N+1] of document offsets")
        if cu_seqlens.dtype.is_floating_point or cu_seqlens.dtype == torch.bool:
            raise ValueError(f"cu_seqlens must be an integer tensor, got {cu_seqlens.dtype}")
        offsets = [int(x) for x in cu_seqlens.tolist()]
        if offsets[0] != 0 or offsets[-1] != total_len:
            raise ValueError(
                f"cu_seqlens must start at 0 and end at T = {total_len}, got {offsets[0]}..{offsets[-1]}"
            )
        lengths = tuple(b - a for a, b in zip(offsets, offsets[1:]))
        if any(n < 0 for n in lengths):
            raise ValueError("cu_seqlens must be non-decreasing")
        device = cu_seqlens.device if device is None else device
        cu = torch.tensor(offsets, dtype=torch.int32, device=device)
        doc = torch.repeat_interleave(
            torch.arange(len(lengths), device=device), torch.tensor(lengths, device=device)
        )
        positions = torch.arange(total_len, device=device) - cu[:-1].long()[doc]
        return cls(cu, lengths, doc, positions, positions == 0)

    @classmethod
    def from_starts(cls, starts: torch.Tensor) -> "Documents":
        """From a bool ``[B, T]`` mask of document starts (each row's first token counts as a start): the
        B rows flattened into one row of B·T tokens, as a batch of packed blocks is trained."""
        flat = starts.reshape(-1).clone()
        T = starts.shape[-1]
        flat[::T] = True
        begins = flat.nonzero().flatten()
        cu = F.pad(begins, (0, 1), value=flat.numel())
        return cls.from_cu_seqlens(cu, flat.numel(), device=starts.device)

    def split(self, x: torch.Tensor, dim: int = 1) -> tuple[torch.Tensor, ...]:
        """x with T along ``dim`` -> one view per document (empty documents give empty views)."""
        return torch.split(x, list(self.lengths), dim=dim)
