"""Modular arithmetic mod 5, with and without brackets: Delétang et al. (ICLR 2023, "Neural Networks and
the Chomsky Hierarchy") define the expressions, Grazzi et al. (ICLR 2025) write them as a language-model
task with an explicit "=" and the answer as a token. Both are generated here:

* without brackets: an odd number of tokens alternating digits (0–4) and operators (+, −, ×), e.g.
  ``1 + 2 × 3``; × binds tighter, + and − go left to right; the value mod 5 (non-negative).
* with brackets: Delétang's recursive rule for an expression of exactly ℓ tokens: ℓ = 1 ``d``, 2
  ``− d``, 3 ``( d )``, 4 ``( − d )``, ℓ ≥ 5 ``( L op R )`` with |L| ~ U{1, …, ℓ − 4} and |R| = ℓ − |L| − 3.
  Delétang's runs draw op from {+, −, ×}; Grazzi et al.'s generator from {+, −} (``operators``).

Layout: the expression, then ``=``, then PAD (0); the label at the ``=`` position is the answer's digit
token, IGNORE_INDEX elsewhere (one prediction per example, chance 0.2). The expression length ℓ is
uniform in [min_len, max_len] (made odd without brackets, as Delétang does). Tokens: PAD 0, ``+`` 1,
``−`` 2, ``×`` 3, ``=`` 4, ``(`` 5, ``)`` 6, digits 0–4 as 7–11.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from recall_lm.models.config import IGNORE_INDEX

MODULUS = 5
PAD, EQUALS, OPEN, CLOSE, FIRST_DIGIT = 0, 4, 5, 6, 7
OPERATORS = {"+": 1, "-": 2, "*": 3}
VOCAB_SIZE = FIRST_DIGIT + MODULUS


def evaluate(tokens: list[str]) -> int:
    """The value mod 5 of an expression given as tokens (digits, + - *, brackets; a − right after ``(``
    or first is unary), with × before + and −, left to right."""
    position = 0

    def atom() -> int:
        nonlocal position
        token = tokens[position]
        position += 1
        if token == "(":
            value = expression()
            position += 1  # ")"
            return value
        if token == "-":
            return -atom()
        return int(token)

    def term() -> int:
        nonlocal position
        value = atom()
        while position < len(tokens) and tokens[position] == "*":
            position += 1
            value *= atom()
        return value

    def expression() -> int:
        nonlocal position
        value = term()
        while position < len(tokens) and tokens[position] in "+-":
            sign = 1 if tokens[position] == "+" else -1
            position += 1
            value += sign * term()
        return value

    return expression() % MODULUS


def _bracketed(length: int, operators: str, rng: np.random.Generator) -> list[str]:
    """Delétang et al.'s recursive expression of exactly ``length`` tokens."""
    digit = str(int(rng.integers(MODULUS)))
    if length <= 4:
        return [[digit], ["-", digit], ["(", digit, ")"], ["(", "-", digit, ")"]][length - 1]
    left = int(rng.integers(1, length - 3))
    op = operators[int(rng.integers(len(operators)))]
    return ["(", *_bracketed(left, operators, rng), op, *_bracketed(length - left - 3, operators, rng), ")"]


def _flat(length: int, operators: str, rng: np.random.Generator) -> list[str]:
    digits = rng.integers(MODULUS, size=(length + 1) // 2)
    ops = rng.integers(len(operators), size=length // 2)
    tokens = [str(int(digits[0]))]
    for op, digit in zip(ops, digits[1:]):
        tokens += [operators[int(op)], str(int(digit))]
    return tokens


def encode(tokens: list[str]) -> list[int]:
    special = {**OPERATORS, "(": OPEN, ")": CLOSE}
    return [special[t] if t in special else FIRST_DIGIT + int(t) for t in tokens]


def modular_arithmetic(
    num_examples: int, min_len: int, max_len: int, brackets: bool, operators: str = "+-*", seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, labels) LongTensors [num_examples, max_len + 1]: the expression, ``=``, PAD; the answer is
    the label at ``=``."""
    if not 1 <= min_len <= max_len:
        raise ValueError(f"modular arithmetic needs 1 ≤ min_len ≤ max_len, got {min_len}, {max_len}")
    if not operators or set(operators) - set(OPERATORS):
        raise ValueError(f"modular arithmetic operators must be drawn from '+-*', got {operators!r}")
    rng = np.random.default_rng(seed)
    inputs = np.full((num_examples, max_len + 1), PAD)
    labels = np.full_like(inputs, IGNORE_INDEX)
    for i in range(num_examples):
        length = int(rng.integers(min_len, max_len + 1))
        if brackets:
            tokens = _bracketed(length, operators, rng)
        else:
            tokens = _flat(length - (1 - length % 2), operators, rng)  # odd, as Delétang et al.
        inputs[i, : len(tokens)] = encode(tokens)
        inputs[i, len(tokens)] = EQUALS
        labels[i, len(tokens)] = FIRST_DIGIT + evaluate(tokens)
    return torch.from_numpy(inputs), torch.from_numpy(labels)


@dataclass
class ModularArithmeticSlice:
    """Expressions mod 5 of min_len…max_len tokens, with or without brackets."""

    min_len: int = 3
    max_len: int = 40
    brackets: bool = False
    operators: str = "+-*"
    num_examples: int = 1000

    @property
    def name(self) -> str:
        kind = "modb" if self.brackets else "mod"
        ops = (
            ""
            if self.operators == "+-*"
            else f"_{''.join({'+': 'p', '-': 'm', '*': 't'}[o] for o in self.operators)}"
        )
        return f"{kind}{ops}_L{self.min_len}-{self.max_len}"

    @property
    def seq_len(self) -> int:
        return self.max_len + 1

    def generate(self, vocab_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        if vocab_size < VOCAB_SIZE:
            raise ValueError(f"modular arithmetic needs vocab_size ≥ {VOCAB_SIZE}, got {vocab_size}")
        return modular_arithmetic(
            self.num_examples, self.min_len, self.max_len, self.brackets, self.operators, seed
        )
