"""The decoding state of a whole model: one mixer state (and optional MLP state) per layer."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ModelState:
    """``mixers[i]`` / ``mlps[i]``: the state of layer i's mixer / MLP (None when stateless)."""

    mixers: list
    mlps: list

    def layer_states(self):
        return [s for s in self.mixers + self.mlps if s is not None]

    def to(self, device: torch.device | str) -> "ModelState":
        move = lambda s: None if s is None else s.to(device)  # noqa: E731
        return ModelState([move(s) for s in self.mixers], [move(s) for s in self.mlps])

    def numel_per_sequence(self) -> int:
        return sum(s.numel_per_sequence() for s in self.layer_states())

    def nbytes_per_sequence(self) -> int:
        return sum(s.nbytes_per_sequence() for s in self.layer_states())
