"""Passkey retrieval (Mohtashami & Jaggi, 2023, "Landmark attention"): a key hidden at a chosen depth
in filler, asked for at the end.

Token version (trainable, MQAR-sized vocabularies). With ``n`` key tokens, one example is the
L + 1 tokens

    filler[:s]  KEY_MARK k1..kn  filler[s:]  QUERY_MARK k1..kn

cut into inputs = the first L tokens and next-token labels = the last L tokens, every label -100
except the n that predict k1..kn after QUERY_MARK. The filler holds F = L + 1 − 2(n + 1) tokens and
the key block starts after s = round(depth · F) of them: depth 0 puts the key first, depth 1 right
before the question. Vocabulary layout: 0 unused, KEY_MARK = 1, QUERY_MARK = 2, filler tokens in
[3, V/2), key tokens in [V/2, V) (as MQAR's values). ``filler="random"`` draws filler uniformly;
``"repeat"`` repeats one fixed random phrase (the "The grass is green..." situation of the paper).

Text version: the paper's prompt with a tokenizer, built to a target token length
(``passkey_text_prompt``); the answer is the number, checked in the model's greedy continuation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from recall_lm.models.config import IGNORE_INDEX

KEY_MARK, QUERY_MARK, FIRST_FILLER = 1, 2, 3


def validate_passkey_arguments(vocab_size: int, seq_len: int, key_len: int, depth: float) -> None:
    if key_len < 1:
        raise ValueError(f"passkey key_len must be ≥ 1, got {key_len}")
    if seq_len + 1 < 2 * (key_len + 1):
        raise ValueError(f"passkey seq_len must be ≥ 2·(key_len + 1) − 1 = {2 * key_len + 1}, got {seq_len}")
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"passkey depth must be in [0, 1], got {depth}")
    if vocab_size // 2 - FIRST_FILLER < 1 or vocab_size - vocab_size // 2 < 2:
        raise ValueError(f"passkey vocab_size too small for filler and key tokens: {vocab_size}")


def key_start(seq_len: int, key_len: int, depth: float) -> int:
    """Position of KEY_MARK in an example: the number of filler tokens before it."""
    filler = seq_len + 1 - 2 * (key_len + 1)
    return int(round(depth * filler))


def passkey_tokens(vocab_size: int, num_examples: int, seq_len: int, depth: float, key_len: int = 4,
                   filler: str = "random", seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Token passkey examples. Returns (inputs, labels), LongTensors [num_examples, seq_len]."""
    validate_passkey_arguments(vocab_size, seq_len, key_len, depth)
    if filler not in ("random", "repeat"):
        raise ValueError(f"passkey filler must be 'random' or 'repeat', got {filler!r}")
    rng = np.random.default_rng(seed)
    N, n, half = num_examples, key_len, vocab_size // 2
    F = seq_len + 1 - 2 * (n + 1)
    if filler == "random":
        fill = rng.integers(FIRST_FILLER, half, size=(N, F))
    else:  # one phrase of 8 filler tokens for the whole set, repeated
        phrase = rng.integers(FIRST_FILLER, half, size=8)
        fill = np.tile(np.resize(phrase, F), (N, 1))
    keys = rng.integers(half, vocab_size, size=(N, n))
    s = key_start(seq_len, n, depth)
    full = np.concatenate([
        fill[:, :s], np.full((N, 1), KEY_MARK), keys, fill[:, s:], np.full((N, 1), QUERY_MARK), keys,
    ], axis=1)  # [N, L + 1]
    labels = full[:, 1:].copy()
    labels[:, : seq_len - n] = IGNORE_INDEX  # only the n answer tokens (the last n targets) are scored
    return torch.from_numpy(full[:, :-1].copy()), torch.from_numpy(labels)


@dataclass
class PasskeySlice:
    """One passkey setting (a train or test slice of ``recall_lm.data.probe_datamodule.PasskeyDataModule``).
    ``depth`` None (training) splits the examples into 16 equal groups, each at its own depth drawn
    uniformly in [0, 1] (so 16 key positions per slice and seed); a number fixes it (evaluation)."""

    seq_len: int = 64
    depth: float | None = None
    key_len: int = 4
    num_examples: int = 1000
    filler: str = "random"

    @property
    def name(self) -> str:
        depth = "any" if self.depth is None else f"{self.depth:g}"
        return f"pk_L{self.seq_len}_d{depth}"

    def generate(self, vocab_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.depth is not None:
            return passkey_tokens(vocab_size, self.num_examples, self.seq_len, self.depth, self.key_len,
                                  self.filler, seed)
        # Uniform depths: 16 groups, each at its own depth drawn in [0, 1].
        rng = np.random.default_rng(seed)
        sizes = np.diff(np.linspace(0, self.num_examples, 17).astype(int))
        parts = [passkey_tokens(vocab_size, int(k), self.seq_len, float(rng.random()), self.key_len,
                                self.filler, seed * 31 + g) for g, k in enumerate(sizes) if k > 0]
        inputs = torch.cat([p[0] for p in parts])
        labels = torch.cat([p[1] for p in parts])
        order = torch.from_numpy(rng.permutation(self.num_examples))
        return inputs[order], labels[order]


# --- text version -------------------------------------------------------------------------------

TEXT_INTRO = ("There is an important piece of information hidden inside a lot of irrelevant text. "
              "Find it and memorize it. I will quiz you about it.")
TEXT_FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
TEXT_QUESTION = "What is the pass key? The pass key is"


def passkey_sentence(passkey: int) -> str:
    return f"The pass key is {passkey}. Remember it. {passkey} is the pass key."


def passkey_text_prompt(tokenizer, target_tokens: int, depth: float, passkey: int) -> list[int]:
    """Token ids of a text passkey prompt of about ``target_tokens`` tokens (never more, unless even
    one filler sentence does not fit), the key sentence after a fraction ``depth`` of the filler."""
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"passkey depth must be in [0, 1], got {depth}")
    intro, key, question = (tokenizer.encode(t) for t in
                            (TEXT_INTRO + " ", " " + passkey_sentence(passkey) + " ", " " + TEXT_QUESTION))
    unit = tokenizer.encode(" " + TEXT_FILLER)
    budget = target_tokens - len(intro) - len(key) - len(question)
    repeats = max(1, budget // len(unit))
    before = int(round(depth * repeats))
    return intro + unit * before + key + unit * (repeats - before) + question
