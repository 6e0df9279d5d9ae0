"""Zoology's two MQAR variants (HazyResearch/zoology, ``zoology/data/forgetting_mqar.py`` and
``compositional_mqar.py``, 2026-01), in the layout and with the query placement of recall_lm.data.mqar.

* **Forgetting MQAR**: kv pairs ``K V`` (keys in [1, V/2), values in [V/2, V), distinct), then
  ``num_updates`` of the keys written again with a new value; each key is queried once and the answer
  is its *latest* value. A memory that cannot overwrite returns the stale one.
* **Compositional MQAR**: kv = g² values, each under a two-token key (K1, K2) from g first and g second
  tokens (the full g × g grid, shuffled), written as triplets ``K1 K2 V``; K1 from the first third of
  the vocabulary, K2 the second, values the last. Neither token alone determines the value. A query is
  ``K1 K2``, answered at K2.

Queries sit in the region after the context at slots drawn with p(g) ∝ a·g^(a−1) (MQAR's power law),
the label at the query's (last) key position; the other region tokens are uniform random tokens.
Departure from Zoology's code: an update's new value always differs from that key's old value (Zoology
only forces it to differ from the value of the key in the same list position, so an update can repeat
the old value and test nothing).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import isqrt

import numpy as np
import torch

from recall_lm.data.mqar import _sample_without_replacement, query_slot_probabilities
from recall_lm.models.config import IGNORE_INDEX


def _place_queries(rng, context, queries, answers, width, L, power_a, vocab_size):
    """The region after ``context`` [N, C] holding each query [N, kv, width − 1] in a slot of ``width``
    tokens, the answer labelled at the query's last token; inputs and labels [N, L]."""
    N, C = context.shape
    kv = queries.shape[1]
    region_len = L - C
    slots = _sample_without_replacement(rng, N, query_slot_probabilities(region_len // width, power_a), kv)
    region = np.zeros((N, region_len + 1), dtype=np.int64)
    labels = np.full((N, C + region_len + 1), IGNORE_INDEX, dtype=np.int64)
    for j in range(width - 1):
        np.put_along_axis(region, width * slots + j, queries[:, :, j], axis=1)
    np.put_along_axis(labels, C + width * slots + width - 1, answers, axis=1)
    inputs = np.concatenate([context, region], axis=1)[:, :L]
    gaps = inputs == 0
    inputs[gaps] = rng.integers(0, vocab_size, size=int(gaps.sum()))
    return torch.from_numpy(inputs), torch.from_numpy(labels[:, 1 : L + 1])


def _check_common(name, vocab_size, L, power_a):
    if L % 2:
        raise ValueError(f"{name} input_seq_len must be even, got {L}")
    if vocab_size <= L:
        raise ValueError(f"{name} needs vocab_size > input_seq_len, got V={vocab_size}, L={L}")
    if not power_a > 0:
        raise ValueError(f"{name} power_a must be > 0, got {power_a}")


def forgetting_mqar(
    vocab_size: int,
    num_examples: int,
    input_seq_len: int,
    num_kv_pairs: int = 8,
    num_updates: int = 4,
    power_a: float = 0.01,
    seed: int = 0,
):
    """(inputs, labels) LongTensors [num_examples, input_seq_len]."""
    N, L, kv, u = num_examples, input_seq_len, num_kv_pairs, num_updates
    _check_common("forgetting MQAR", vocab_size, L, power_a)
    if not 0 <= u <= kv or kv < 1:
        raise ValueError(
            f"forgetting MQAR needs 1 ≤ num_kv_pairs and 0 ≤ num_updates ≤ num_kv_pairs, got {kv}, {u}"
        )
    if 2 * (kv + u) + 2 * kv > L:
        raise ValueError(
            f"forgetting MQAR needs 2·(num_kv_pairs + num_updates) + 2·num_kv_pairs ≤ input_seq_len, "
            f"got kv={kv}, updates={u}, L={L}"
        )
    rng = np.random.default_rng(seed)
    half = vocab_size // 2
    keys = 1 + _sample_without_replacement(rng, N, np.ones(half - 1), kv)
    values = half + _sample_without_replacement(rng, N, np.ones(vocab_size - half), kv)
    updated = _sample_without_replacement(rng, N, np.ones(kv), u)  # which keys, in writing order
    old = np.take_along_axis(values, updated, 1)
    shift = rng.integers(1, vocab_size - half, size=old.shape)  # a new value ≠ the old one
    new = half + (old - half + shift) % (vocab_size - half)
    final = values.copy()
    np.put_along_axis(final, updated, new, axis=1)
    pairs = np.empty((N, 2 * (kv + u)), dtype=np.int64)
    pairs[:, 0 : 2 * kv : 2], pairs[:, 1 : 2 * kv : 2] = keys, values
    pairs[:, 2 * kv :: 2], pairs[:, 2 * kv + 1 :: 2] = np.take_along_axis(keys, updated, 1), new
    return _place_queries(rng, pairs, keys[:, :, None], final, 2, L, power_a, vocab_size)


def compositional_mqar(
    vocab_size: int,
    num_examples: int,
    input_seq_len: int,
    num_kv_pairs: int = 4,
    power_a: float = 0.01,
    seed: int = 0,
):
    """(inputs, labels) LongTensors [num_examples, input_seq_len]."""
    N, L, kv = num_examples, input_seq_len, num_kv_pairs
    _check_common("compositional MQAR", vocab_size, L, power_a)
    g = isqrt(kv)
    if kv < 1 or g * g != kv:
        raise ValueError(
            f"compositional MQAR needs num_kv_pairs a perfect square (a g × g grid of keys), got {kv}"
        )
    if 6 * kv > L:
        raise ValueError(f"compositional MQAR needs 6·num_kv_pairs ≤ input_seq_len, got kv={kv}, L={L}")
    third = vocab_size // 3
    if g > third - 1 or kv > vocab_size - 2 * third:
        raise ValueError(
            f"compositional MQAR: vocab_size={vocab_size} has too few tokens per third for kv={kv}"
        )
    rng = np.random.default_rng(seed)
    first = 1 + _sample_without_replacement(rng, N, np.ones(third - 1), g)
    second = third + _sample_without_replacement(rng, N, np.ones(third), g)
    values = 2 * third + _sample_without_replacement(rng, N, np.ones(vocab_size - 2 * third), kv)
    grid = np.stack([np.repeat(first, g, 1), np.tile(second, (1, g))], -1)  # [N, kv, 2]
    order = np.argsort(rng.random((N, kv)), 1)
    grid = np.take_along_axis(grid, order[..., None], 1)
    context = np.concatenate([grid, values[..., None]], -1).reshape(N, 3 * kv)
    return _place_queries(rng, context, grid, values, 3, L, power_a, vocab_size)


@dataclass
class ForgettingMQARSlice:
    input_seq_len: int = 64
    num_kv_pairs: int = 8
    num_updates: int = 4
    num_examples: int = 1000
    power_a: float = 0.01

    @property
    def name(self) -> str:
        return f"fmqar_L{self.input_seq_len}_kv{self.num_kv_pairs}_u{self.num_updates}"

    @property
    def seq_len(self) -> int:
        return self.input_seq_len

    def generate(self, vocab_size: int, seed: int):
        return forgetting_mqar(
            vocab_size,
            self.num_examples,
            self.input_seq_len,
            self.num_kv_pairs,
            self.num_updates,
            self.power_a,
            seed,
        )


@dataclass
class CompositionalMQARSlice:
    input_seq_len: int = 64
    num_kv_pairs: int = 4
    num_examples: int = 1000
    power_a: float = 0.01

    @property
    def name(self) -> str:
        return f"cmqar_L{self.input_seq_len}_kv{self.num_kv_pairs}"

    @property
    def seq_len(self) -> int:
        return self.input_seq_len

    def generate(self, vocab_size: int, seed: int):
        return compositional_mqar(
            vocab_size, self.num_examples, self.input_seq_len, self.num_kv_pairs, self.power_a, seed
        )
