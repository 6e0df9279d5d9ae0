"""Typed decoding states held by the mixers between calls.

Every state is a dataclass of tensors whose first dimension is the batch. ``numel_per_sequence`` is
what ``state_size()`` of the owning mixer reports, and tests check the two agree.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch


class MixerState:
    """Base of the per-layer decoding states: lists its tensors, moves between devices."""

    def tensors(self) -> list[torch.Tensor]:
        return [t for t in (getattr(self, f.name) for f in fields(self)) if torch.is_tensor(t)]

    def to(self, device: torch.device | str) -> "MixerState":
        moved = {f.name: getattr(self, f.name).to(device) for f in fields(self) if torch.is_tensor(getattr(self, f.name))}
        return replace(self, **moved)

    def numel_per_sequence(self) -> int:
        return sum(t[0].numel() for t in self.tensors())

    def nbytes_per_sequence(self) -> int:
        return sum(t[0].numel() * t.element_size() for t in self.tensors())


@dataclass
class KVCache(MixerState):
    """Softmax attention: the keys and values of every token seen so far. k, v: [B, T_seen, H, D]."""

    k: torch.Tensor
    v: torch.Tensor

    @property
    def length(self) -> int:
        return self.k.shape[1]


@dataclass
class RecurrentState(MixerState):
    """A linear-attention memory. S: [B, H, K, V] in fp32 (for normalised maps V includes the ones column)."""

    S: torch.Tensor
