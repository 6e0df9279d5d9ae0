"""Typed decoding states held by the mixers between calls.

Every state is a dataclass of tensors whose first dimension is the batch. ``numel_per_sequence`` is
what ``state_size()`` of the owning mixer reports, and tests check the two agree.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch


class MixerState:
    """Base of the per-layer decoding states: lists its tensors, moves between devices."""

    def tensors(self) -> list[torch.Tensor]:
        return [t for t in (getattr(self, f.name) for f in fields(self)) if torch.is_tensor(t)]

    def to(self, device: torch.device | str) -> "MixerState":
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in fields(self)
            if torch.is_tensor(getattr(self, f.name))
        }
        return replace(self, **moved)

    def numel_per_sequence(self) -> int:
        return sum(t[0].numel() for t in self.tensors())

    def nbytes_per_sequence(self) -> int:
        return sum(t[0].numel() * t.element_size() for t in self.tensors())


@dataclass
class KVCache(MixerState):
    """Softmax attention: the keys and values of every token seen so far.

    k, v: [B, H, capacity, D] buffers whose first ``length`` positions hold the tokens seen. Appending
    writes in place when this state is the newest one on its buffers (``frontier[0] == length``: no
    other state has written past it) and they have room; otherwise it copies into new buffers first,
    doubling the capacity when full. A decode step therefore moves O(T_new) numbers instead of copying
    the whole cache, and every state object stays valid: continuing an older state a second time
    (branching) copies instead of overwriting. The sizes reported count the ``length`` tokens held, not
    the spare capacity. Under autograd (tensors that need gradients) appending is out of place.
    """

    k: torch.Tensor
    v: torch.Tensor
    length: int = 0
    frontier: list = field(default_factory=lambda: [0], repr=False, compare=False)

    def keys(self) -> torch.Tensor:
        """[B, H, length, D]: a view of the buffer."""
        return self.k[:, :, : self.length]

    def values(self) -> torch.Tensor:
        return self.v[:, :, : self.length]

    @property
    def capacity(self) -> int:
        return self.k.shape[2]

    def numel_per_sequence(self) -> int:
        return 2 * self.length * self.k.shape[1] * self.k.shape[3]

    def nbytes_per_sequence(self) -> int:
        return self.numel_per_sequence() * self.k.element_size()

    def append(self, k: torch.Tensor, v: torch.Tensor) -> "KVCache":
        """k, v: [B, H, T, D] of the next T tokens -> the cache holding length + T tokens."""
        end = self.length + k.shape[2]
        k, v = k.to(self.k.dtype), v.to(self.v.dtype)
        if torch.is_grad_enabled() and (k.requires_grad or v.requires_grad or self.k.requires_grad):
            return KVCache(torch.cat([self.keys(), k], 2), torch.cat([self.values(), v], 2), end, [end])
        if self.frontier[0] == self.length and end <= self.capacity:
            key_buffer, value_buffer, frontier = self.k, self.v, self.frontier
        else:
            capacity = self.capacity if end <= self.capacity else max(end, 2 * self.capacity)
            key_buffer = self.k.new_empty(*self.k.shape[:2], capacity, self.k.shape[3])
            value_buffer = self.v.new_empty(*self.v.shape[:2], capacity, self.v.shape[3])
            key_buffer[:, :, : self.length] = self.keys()
            value_buffer[:, :, : self.length] = self.values()
            frontier = [self.length]
        key_buffer[:, :, self.length : end] = k
        value_buffer[:, :, self.length : end] = v
        frontier[0] = end
        return KVCache(key_buffer, value_buffer, end, frontier)


@dataclass
class RecurrentState(MixerState):
    """A linear-attention memory. S: [B, H, K, V] in fp32 (for normalised maps V includes the ones column)."""

    S: torch.Tensor
