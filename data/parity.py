"""Parity, as Grazzi et al. (ICLR 2025, "Unlocking State-Tracking in Linear RNNs Through Negative
Eigenvalues") train it, with the xLSTM project's formal-language generator.

One example: n bits drawn uniformly from the tokens {1, 2}, n + 1 ~ U{min_len, …, max_len} (the length
counts the answer), then PAD (0) up to the slice's length. The answer is 1 + (number of 2s mod 2) —
token 1 for an even count, 2 for an odd one — predicted at the last bit's position: labels are
IGNORE_INDEX everywhere else. Grazzi et al. train on lengths 3–40 and test on 40–256; the accuracy
of one example is that one prediction (chance 0.5).

    bits 2 1 2 2 → inputs [2, 1, 2, 2, 0, …], labels [-, -, -, 2, -, …]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from recall_lm.models.config import IGNORE_INDEX

PAD, ZERO_BIT, ONE_BIT = 0, 1, 2


def parity(num_examples: int, min_len: int, max_len: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Parity examples: (inputs, labels) LongTensors [num_examples, max_len − 1]."""
    if not 2 <= min_len <= max_len:
        raise ValueError(
            f"parity needs 2 ≤ min_len ≤ max_len (lengths count the answer), got {min_len}, {max_len}"
        )
    rng = np.random.default_rng(seed)
    T = max_len - 1
    bits = rng.integers(ZERO_BIT, ONE_BIT + 1, size=(num_examples, T))
    n = rng.integers(min_len, max_len + 1, size=num_examples) - 1  # bits per example
    inputs = np.where(np.arange(T)[None] < n[:, None], bits, PAD)
    ones = (inputs == ONE_BIT).sum(1)
    labels = np.full_like(inputs, IGNORE_INDEX)
    labels[np.arange(num_examples), n - 1] = ZERO_BIT + ones % 2
    return torch.from_numpy(inputs), torch.from_numpy(labels)


@dataclass
class ParitySlice:
    """Parity with lengths (bits + answer) uniform in [min_len, max_len]."""

    min_len: int = 3
    max_len: int = 40
    num_examples: int = 1000

    @property
    def name(self) -> str:
        return f"parity_L{self.min_len}-{self.max_len}"

    @property
    def seq_len(self) -> int:
        return self.max_len - 1

    def generate(self, vocab_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        if vocab_size < 3:
            raise ValueError(f"parity needs vocab_size ≥ 3 (PAD and two bits), got {vocab_size}")
        return parity(self.num_examples, self.min_len, self.max_len, seed)
