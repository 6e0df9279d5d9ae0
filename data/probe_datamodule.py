"""LightningDataModules for the trainable probes: passkey retrieval and set disjointness.

Both serve ``(input_ids, labels)`` batches like the MQAR data module (training slices mixed, each
test slice reported as ``val/acc/<slice name>``), so ``train.py`` trains on them unchanged:
``python train.py fit --config configs/probes/passkey.yaml``.
"""
from __future__ import annotations

from recall_lm.data.passkey import PasskeySlice
from recall_lm.data.set_disjointness import SetDisjointnessSlice
from recall_lm.data.slices_datamodule import SlicesDataModule


class PasskeyDataModule(SlicesDataModule):
    """Token passkey retrieval (data/passkey.py). Args as MQARDataModule, slices are PasskeySlice."""

    def __init__(self, vocab_size: int = 512, train_slices: list[PasskeySlice] | None = None,
                 test_slices: list[PasskeySlice] | None = None, batch_size: int = 64, train_seed: int = 0,
                 test_seed: int = 1_000_003, num_workers: int = 0):
        super().__init__(
            vocab_size,
            train_slices or [PasskeySlice(64, None, 4, 10_000)],
            test_slices or [PasskeySlice(64, 0.5, 4, 500)],
            batch_size,
            train_seed,
            test_seed,
            num_workers,
        )


class SetDisjointnessDataModule(SlicesDataModule):
    """JRT's set disjointness (data/set_disjointness.py); slices are SetDisjointnessSlice."""

    def __init__(
        self,
        vocab_size: int = 512,
        train_slices: list[SetDisjointnessSlice] | None = None,
        test_slices: list[SetDisjointnessSlice] | None = None,
        batch_size: int = 64,
        train_seed: int = 0,
        test_seed: int = 1_000_003,
        num_workers: int = 0,
    ):
        super().__init__(
            vocab_size,
            train_slices or [SetDisjointnessSlice(4, 16, 1, 10_000)],
            test_slices or [SetDisjointnessSlice(4, 16, 1, 500)],
            batch_size,
            train_seed,
            test_seed,
            num_workers,
        )
