"""Group word problems (Merrill, Petty & Sabharwal, ICML 2024, "The Illusion of State in State-Space
Models"; Siems et al., 2025, DeltaProduct): read a sequence of group elements x_1 … x_T and output, at
every position, the running product y_t = x_1 · x_2 ⋯ x_t (each new element multiplied on the right).

Elements are numbered as in the reference code (jopetty/word-problem): S_n's permutations of (1, …, n)
in lexicographic order (index 0 the identity), composed as (a·b)(i) = a(b(i)); A_n the even ones, in
S_n's order, renumbered; Z_n the residues; G × H pairs (g, h) numbered |H|·g + h. Inputs and labels
share the token ids 0 … |G| − 1; every position is scored (the reference scores every position too, and
adds a BOS token that this version leaves out). Word problems of the non-solvable A5 and S5 need
depth that grows with T in TC⁰ models (Merrill et al.); A4 × Z5 (solvable) and Z60 (abelian) have as
many elements as A5.

    S3: inputs 1 2 → labels 1 4;  inputs 3 3 3 → labels 3 4 0
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

GROUPS = ("S3", "S4", "S5", "A4", "A5", "A4xZ5", "Z60")


def _is_even(permutation: tuple[int, ...]) -> bool:
    inversions = sum(a > b for a, b in itertools.combinations(permutation, 2))
    return inversions % 2 == 0


def _permutation_table(n: int, even_only: bool) -> np.ndarray:
    """The multiplication table [|G|, |G|] of S_n (or A_n) in the reference numbering."""
    elements = [p for p in itertools.permutations(range(n)) if not even_only or _is_even(p)]
    index = {p: i for i, p in enumerate(elements)}
    return np.array([[index[tuple(a[b[i]] for i in range(n))] for b in elements] for a in elements])


def _cyclic_table(n: int) -> np.ndarray:
    return (np.arange(n)[:, None] + np.arange(n)[None]) % n


def _direct_product(g: np.ndarray, h: np.ndarray) -> np.ndarray:
    """(g1, h1)·(g2, h2) = (g1 g2, h1 h2), element (g, h) numbered |H|·g + h."""
    H = len(h)
    return (g[:, None, :, None] * H + h[None, :, None, :]).reshape(len(g) * H, len(g) * H)


@lru_cache(maxsize=None)
def multiplication_table(group: str) -> np.ndarray:
    """table[a, b] = a·b for the named group (one of ``GROUPS``)."""
    if group not in GROUPS:
        raise ValueError(f"word problems: group must be one of {GROUPS}, got {group!r}")
    if group == "A4xZ5":
        return _direct_product(multiplication_table("A4"), _cyclic_table(5))
    if group.startswith("Z"):
        return _cyclic_table(int(group[1:]))
    return _permutation_table(int(group[1:]), even_only=group.startswith("A"))


def prefix_products(group: str, elements: np.ndarray) -> np.ndarray:
    """y[:, t] = x[:, 0] · … · x[:, t] for element indices [N, T]."""
    table = multiplication_table(group)
    out = np.empty_like(elements)
    acc = elements[:, 0]
    out[:, 0] = acc
    for t in range(1, elements.shape[1]):
        acc = table[acc, elements[:, t]]
        out[:, t] = acc
    return out


@dataclass
class WordProblemSlice:
    """T uniformly random elements of ``group``; the label at every position is the running product."""

    group: str = "S3"
    length: int = 32
    num_examples: int = 1000

    @property
    def name(self) -> str:
        return f"{self.group}_L{self.length}"

    @property
    def seq_len(self) -> int:
        return self.length

    def generate(self, vocab_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        size = len(multiplication_table(self.group))
        if vocab_size < size:
            raise ValueError(f"word problems over {self.group} need vocab_size ≥ {size}, got {vocab_size}")
        if self.length < 1:
            raise ValueError(f"word problems need length ≥ 1, got {self.length}")
        elements = np.random.default_rng(seed).integers(size, size=(self.num_examples, self.length))
        return torch.from_numpy(elements), torch.from_numpy(prefix_products(self.group, elements))
