"""Set disjointness (SD), the task of Arora et al., 2024, "Just read twice: closing the recall gap for
recurrent language models" (JRT).

Definition (communication complexity; JRT §3): given two sets A and B over a universe, decide whether
A ∩ B = ∅. JRT reduces in-context recall to SD and shows that the memory a streaming (recurrent)
model needs depends on the order of the sets: reading the shorter set first lets it store only that
set, while a long first set must be stored whole. Their synthetic, which is what is generated here,
draws A and B with exactly one common element, shows them one after the other with a separator,
and asks the model to output that element (the search version of the decision problem: a model
that finds the common element also decides disjointness). Reading the input twice ("JRT": the
context repeated) gives a recurrent model a second look at A after it has seen B.

One example, with ``passes`` = p reads of the context C = A SEP B:

    (C SEP) × (p − 1)  C  ANSWER  x        where {x} = A ∩ B

inputs = everything but the final x (length p·(|A| + |B| + 2)), labels = -100 everywhere
except the last position, whose target is x. Elements of A are distinct, elements of B are
distinct, and A and B share only x; element order is random (so x sits at a uniform position in
each set). Vocabulary: 0 unused, SEP = 1, ANSWER = 2, elements in [3, V).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from recall_lm.models.config import IGNORE_INDEX

SEP, ANSWER, FIRST_ELEMENT = 1, 2, 3


def set_disjointness_length(size_a: int, size_b: int, num_passes: int = 1) -> int:
    """The input length of one example."""
    return num_passes * (size_a + size_b + 2)


def set_disjointness(vocab_size: int, num_examples: int, size_a: int, size_b: int, num_passes: int = 1,
                     seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """SD examples. Returns (inputs, labels), LongTensors [num_examples, set_disjointness_length(...)]."""
    universe = vocab_size - FIRST_ELEMENT
    if size_a < 1 or size_b < 1 or num_passes < 1:
        raise ValueError(
            f"set disjointness needs size_a, size_b, num_passes ≥ 1, got {size_a}, {size_b}, {num_passes}"
        )
    if size_a + size_b - 1 > universe:
        raise ValueError(f"set disjointness needs size_a + size_b − 1 ≤ vocab_size − 3 distinct elements, "
                         f"got {size_a} + {size_b} − 1 > {universe}")
    rng = np.random.default_rng(seed)
    N = num_examples
    # size_a + size_b − 1 distinct elements per example: the first is the common one.
    draws = FIRST_ELEMENT + np.argsort(rng.random((N, universe)), axis=1)[:, : size_a + size_b - 1]
    common = draws[:, :1]
    a = np.concatenate([common, draws[:, 1:size_a]], axis=1)
    b = np.concatenate([common, draws[:, size_a:]], axis=1)
    a = np.take_along_axis(a, np.argsort(rng.random(a.shape), axis=1), axis=1)
    b = np.take_along_axis(b, np.argsort(rng.random(b.shape), axis=1), axis=1)
    context = np.concatenate([a, np.full((N, 1), SEP), b], axis=1)
    pieces = []
    for p in range(num_passes):
        pieces.append(context)
        pieces.append(np.full((N, 1), SEP if p < num_passes - 1 else ANSWER))
    inputs = np.concatenate(pieces, axis=1)
    labels = np.full_like(inputs, IGNORE_INDEX)
    labels[:, -1] = common[:, 0]
    return torch.from_numpy(inputs), torch.from_numpy(labels)


@dataclass
class SetDisjointnessSlice:
    """One SD setting: |A|, |B| (their order is the point: short-first vs long-first) and passes."""

    size_a: int = 4
    size_b: int = 16
    num_passes: int = 1
    num_examples: int = 1000

    @property
    def name(self) -> str:
        suffix = f"_x{self.num_passes}" if self.num_passes > 1 else ""
        return f"sd_A{self.size_a}_B{self.size_b}{suffix}"

    @property
    def seq_len(self) -> int:
        return set_disjointness_length(self.size_a, self.size_b, self.num_passes)

    def generate(self, vocab_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        return set_disjointness(
            vocab_size, self.num_examples, self.size_a, self.size_b, self.num_passes, seed
        )
