"""Copying (Jelassi, Brandfonbrener, Kakade & Malach, 2024, "Repeat After Me: Transformers are Better
than State Space Models at Copying"): read a random string, then write it again.

One example, as the reference code lays it out: ``$ s | s .`` with s a string of ``length`` letters
drawn uniformly from an alphabet of ``alphabet`` letters (26 in the paper). The model reads ``$ s |``
and is scored on every character of the copy and the final ``.``: inputs are the example without its
last token, labels the next tokens at those positions (teacher-forced, as the reference evaluates).
A fixed-state model must hold the whole string: it fails once s exceeds what its state stores.
Tokens: letters 0 … alphabet − 1, then ``$``, ``|``, ``.``.

    s = "cab" (2 0 1), alphabet 26 → inputs [26, 2, 0, 1, 27, 2, 0, 1], labels [-, -, -, -, 2, 0, 1, 28]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from recall_lm.models.config import IGNORE_INDEX


def copying(
    num_examples: int, length: int, alphabet: int = 26, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, labels) LongTensors [num_examples, 2·length + 2]."""
    if length < 1 or alphabet < 2:
        raise ValueError(f"copying needs length ≥ 1 and alphabet ≥ 2, got {length}, {alphabet}")
    start, separator, end = alphabet, alphabet + 1, alphabet + 2
    s = np.random.default_rng(seed).integers(alphabet, size=(num_examples, length))
    column = np.full((num_examples, 1), 0)
    full = np.concatenate([column + start, s, column + separator, s, column + end], 1)
    labels = np.full((num_examples, 2 * length + 2), IGNORE_INDEX)
    labels[:, length + 1 :] = full[:, length + 2 :]
    return torch.from_numpy(full[:, :-1].copy()), torch.from_numpy(labels)


@dataclass
class CopyingSlice:
    """Strings of ``length`` letters over ``alphabet`` letters."""

    length: int = 16
    alphabet: int = 26
    num_examples: int = 1000

    @property
    def name(self) -> str:
        return f"copy_L{self.length}" + ("" if self.alphabet == 26 else f"_a{self.alphabet}")

    @property
    def seq_len(self) -> int:
        return 2 * self.length + 2

    def generate(self, vocab_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        if vocab_size < self.alphabet + 3:
            raise ValueError(
                f"copying needs vocab_size ≥ alphabet + 3 = {self.alphabet + 3}, got {vocab_size}"
            )
        return copying(self.num_examples, self.length, self.alphabet, seed)
