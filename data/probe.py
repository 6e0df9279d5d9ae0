"""The probe contract: what a trainable recall probe is, so that train.py, the sweeps, the MQAR table and
the reports treat MQAR, passkey, set disjointness and any new probe alike.

A probe is a *slice* type, a dataclass with

    name: str                 the slice's short name (``L64_kv8``, ``pk_L64_d0.5``); its test accuracy is
                              logged as ``val/acc/<name>``
    seq_len: int              the length of its examples (one field for all probes; MQAR's config field is
                              Zoology's ``input_seq_len`` and ``seq_len`` reads it)
    num_examples: int
    generate(vocab_size, seed) -> (inputs [N, T], labels [N, T])
                              inputs are token ids in [0, vocab_size); labels are the next-token targets at
                              the positions the probe scores and IGNORE_INDEX (-100) everywhere else

and a ``SlicesDataModule`` subclass that serves its slices (``data/mqar_datamodule.py``,
``data/probe_datamodule.py``). Scoring is the same for every probe: an example's accuracy is the share of
its scored positions predicted right (``recall_lm.training.task.per_example_accuracy``), averaged over the
slice. A new probe is one file (its slice and generator, plus its DataModule subclass in
``data/probe_datamodule.py``) and a config in ``configs/probes/``; a checkpoint report for it, if it needs
one beyond ``val/acc/<slice>``, is one file in ``evals/probes/`` built on ``evals/probes/report.py``.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from recall_lm.models.config import IGNORE_INDEX


@runtime_checkable
class ProbeSlice(Protocol):
    """One setting of a probe (see the module docstring)."""

    num_examples: int

    @property
    def name(self) -> str: ...

    @property
    def seq_len(self) -> int: ...

    def generate(self, vocab_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]: ...


def check_slice(item: object, where: str) -> None:
    """Raise a ValueError naming ``where`` unless ``item`` follows the probe contract."""
    missing = [part for part in ("name", "seq_len", "num_examples", "generate") if not hasattr(item, part)]
    if missing:
        raise ValueError(
            f"{where}: {type(item).__name__} is not a probe slice (it lacks {', '.join(missing)}; "
            "see recall_lm.data.probe)"
        )


def check_generated(item: ProbeSlice, inputs: torch.Tensor, labels: torch.Tensor, vocab_size: int) -> None:
    """Raise a ValueError when a slice's generated data breaks the contract (shapes, ids, nothing scored)."""
    expected = (item.num_examples, item.seq_len)
    if tuple(inputs.shape) != expected or tuple(labels.shape) != expected:
        raise ValueError(f"slice {item.name}: generated inputs {tuple(inputs.shape)} and labels "
                         f"{tuple(labels.shape)}, expected {expected} (num_examples, seq_len)")
    if inputs.numel() and (int(inputs.min()) < 0 or int(inputs.max()) >= vocab_size):
        raise ValueError(f"slice {item.name}: token ids outside [0, {vocab_size})")
    scored = labels != IGNORE_INDEX
    if not bool(scored.any(dim=1).all()):
        raise ValueError(
            f"slice {item.name}: an example has no scored position (every label is {IGNORE_INDEX})"
        )
