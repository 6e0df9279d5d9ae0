"""Multi-query associative recall (MQAR), exactly as the Zoology paper (Arora et al., 2023) defines it.

An example of length L with ``kv`` pairs and ``passes`` reads of the context:

    k1 v1 k2 v2 ... k_kv v_kv  (repeated ``passes`` times)  |  query region of L - 2·kv·passes tokens

Keys are drawn without replacement from [1, V/2), values from [V/2, V). The query region has
``space = (L - context) / 2`` slots; each key is asked once, in a slot g ∈ {1..space} drawn without
replacement with p(g) ∝ a·g^(a-1) (most queries come soon after the context), at offset 2·(g-1) of
the region. Labels are -100 except at each query key's position, whose target is its value (the
next-token alignment used by the LM loss). The other region tokens are 0, or, with
``random_non_queries``, replaced by uniform random tokens over the whole vocabulary.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from recall_lm.models.config import IGNORE_INDEX


def query_slot_probabilities(space: int, power_a: float) -> np.ndarray:
    """p(g) ∝ a·g^(a-1) for g = 1..space: the power-law distance of a query from the context."""
    p = power_a * np.arange(1, space + 1, dtype=np.float64) ** (power_a - 1)
    return p / p.sum()


def _sample_without_replacement(
    rng: np.random.Generator, num_rows: int, weights: np.ndarray, k: int
) -> np.ndarray:
    """k distinct indices per row drawn successively ∝ ``weights`` (Efraimidis–Spirakis: the k largest
    keys log(u)/w, in decreasing order, are distributed as k successive weighted draws). Rows are
    processed in blocks so that memory stays bounded at Zoology's sizes (100k rows × 4095 keys)."""
    n = weights.shape[0]
    out = np.empty((num_rows, k), dtype=np.int64)
    block = max(1, (1 << 22) // n)
    for start in range(0, num_rows, block):
        rows = min(block, num_rows - start)
        keys = np.log(rng.random((rows, n))) / weights
        top = np.argpartition(-keys, k - 1, axis=1)[:, :k] if k < n else np.tile(np.arange(n), (rows, 1))
        order = np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1)
        out[start : start + rows] = np.take_along_axis(top, order, axis=1)
    return out


def validate_mqar_arguments(vocab_size: int, input_seq_len: int, num_kv_pairs: int, num_passes: int = 1):
    """Raise a ValueError naming the violated constraint."""
    if input_seq_len % 2:
        raise ValueError(f"MQAR input_seq_len must be even, got {input_seq_len}")
    if num_kv_pairs < 1 or num_passes < 1:
        raise ValueError(f"MQAR needs num_kv_pairs ≥ 1 and num_passes ≥ 1, got {num_kv_pairs}, {num_passes}")
    if 2 * num_kv_pairs * num_passes + 2 * num_kv_pairs > input_seq_len:
        raise ValueError(
            f"MQAR needs 2·num_kv_pairs·num_passes + 2·num_kv_pairs ≤ input_seq_len "
            f"(context plus one query slot per key), got kv={num_kv_pairs}, passes={num_passes}, "
            f"L={input_seq_len}"
        )
    if vocab_size <= input_seq_len:
        raise ValueError(f"MQAR needs vocab_size > input_seq_len, got V={vocab_size}, L={input_seq_len}")
    if num_kv_pairs > vocab_size // 2 - 1:
        raise ValueError(f"MQAR needs num_kv_pairs ≤ vocab_size/2 - 1 distinct keys, got {num_kv_pairs}")


def multiquery_ar(
    vocab_size: int,
    num_examples: int,
    input_seq_len: int,
    num_kv_pairs: int,
    power_a: float = 0.01,
    random_non_queries: bool = True,
    num_passes: int = 1,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate MQAR examples. Returns (inputs, labels), LongTensors [num_examples, input_seq_len]."""
    validate_mqar_arguments(vocab_size, input_seq_len, num_kv_pairs, num_passes)
    if not power_a > 0:  # p(gap g) ∝ a·g^(a−1) is a distribution only for a > 0
        raise ValueError(f"MQAR power_a must be > 0 (Zoology's default: 0.01), got {power_a}")
    rng = np.random.default_rng(seed)
    N, L, kv = num_examples, input_seq_len, num_kv_pairs
    half = vocab_size // 2

    keys = 1 + _sample_without_replacement(rng, N, np.ones(half - 1), kv)  # [N, kv] in [1, V/2)
    values = half + _sample_without_replacement(rng, N, np.ones(vocab_size - half), kv)  # [N, kv] in [V/2, V)
    pairs = np.empty((N, 2 * kv), dtype=np.int64)
    pairs[:, 0::2], pairs[:, 1::2] = keys, values
    context = np.tile(pairs, (1, num_passes))

    region_len = L - context.shape[1]
    space = region_len // 2
    slots = _sample_without_replacement(rng, N, query_slot_probabilities(space, power_a), kv)  # 0-based g-1
    # One extra column so that the label of a query at the region's last even offset has a place.
    region = np.zeros((N, region_len + 1), dtype=np.int64)
    region_labels = np.full((N, region_len + 1), IGNORE_INDEX, dtype=np.int64)
    np.put_along_axis(region, 2 * slots, keys, axis=1)
    np.put_along_axis(region_labels, 2 * slots + 1, values, axis=1)

    inputs = np.concatenate([context, region], axis=1)[:, :L]
    labels = np.concatenate([np.full_like(context, IGNORE_INDEX), region_labels], axis=1)[:, 1 : L + 1]
    if random_non_queries:
        gaps = inputs == 0
        inputs[gaps] = rng.integers(0, vocab_size, size=int(gaps.sum()))
    return torch.from_numpy(inputs), torch.from_numpy(labels)


@dataclass
class MQARSlice:
    """One MQAR setting; a train or test set is a list of slices, each reported separately."""

    input_seq_len: int = 64
    num_kv_pairs: int = 4
    num_examples: int = 1000
    num_passes: int = 1
    power_a: float = 0.01
    random_non_queries: bool = True

    @property
    def seq_len(self) -> int:
        """The probe contract's length (recall_lm.data.probe); the config field keeps Zoology's name."""
        return self.input_seq_len

    @property
    def name(self) -> str:
        suffix = f"_x{self.num_passes}" if self.num_passes > 1 else ""
        return f"L{self.input_seq_len}_kv{self.num_kv_pairs}{suffix}"

    def generate(self, vocab_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        return multiquery_ar(
            vocab_size, self.num_examples, self.input_seq_len, self.num_kv_pairs,
            power_a=self.power_a, random_non_queries=self.random_non_queries,
            num_passes=self.num_passes, seed=seed,
        )
