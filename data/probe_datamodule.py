"""LightningDataModules for the trainable probes: passkey retrieval, set disjointness, and the
state-tracking and recall probes (parity, modular arithmetic, group word problems, copying, forgetting
and compositional MQAR).

All serve ``(input_ids, labels)`` batches like the MQAR data module (training slices mixed, each
test slice reported as ``val/acc/<slice name>``), so ``train.py`` trains on them unchanged:
``python train.py fit --config configs/probes/passkey.yaml``.
"""
from __future__ import annotations

from recall_lm.data.copying import CopyingSlice
from recall_lm.data.modular_arithmetic import ModularArithmeticSlice
from recall_lm.data.mqar_variants import CompositionalMQARSlice, ForgettingMQARSlice
from recall_lm.data.parity import ParitySlice
from recall_lm.data.passkey import PasskeySlice
from recall_lm.data.set_disjointness import SetDisjointnessSlice
from recall_lm.data.slices_datamodule import SlicesDataModule
from recall_lm.data.word_problems import WordProblemSlice


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



class ParityDataModule(SlicesDataModule):
    """Parity (data/parity.py); slices are ParitySlice. Args as MQARDataModule."""

    def __init__(self, vocab_size: int = 3, train_slices: list[ParitySlice] | None = None,
                 test_slices: list[ParitySlice] | None = None, batch_size: int = 64, train_seed: int = 0,
                 test_seed: int = 1_000_003, num_workers: int = 0):
        super().__init__(vocab_size, train_slices or [ParitySlice(3, 40, 10_000)],
                         test_slices or [ParitySlice(40, 256, 500)], batch_size, train_seed, test_seed,
                         num_workers)


class ModularArithmeticDataModule(SlicesDataModule):
    """Modular arithmetic mod 5 (data/modular_arithmetic.py); slices are ModularArithmeticSlice."""

    def __init__(self, vocab_size: int = 12, train_slices: list[ModularArithmeticSlice] | None = None,
                 test_slices: list[ModularArithmeticSlice] | None = None, batch_size: int = 64,
                 train_seed: int = 0, test_seed: int = 1_000_003, num_workers: int = 0):
        super().__init__(vocab_size, train_slices or [ModularArithmeticSlice(3, 40, num_examples=10_000)],
                         test_slices or [ModularArithmeticSlice(40, 256, num_examples=500)], batch_size,
                         train_seed, test_seed, num_workers)


class WordProblemDataModule(SlicesDataModule):
    """Group word problems (data/word_problems.py); slices are WordProblemSlice."""

    def __init__(self, vocab_size: int = 120, train_slices: list[WordProblemSlice] | None = None,
                 test_slices: list[WordProblemSlice] | None = None, batch_size: int = 64, train_seed: int = 0,
                 test_seed: int = 1_000_003, num_workers: int = 0):
        super().__init__(vocab_size, train_slices or [WordProblemSlice("S3", 32, 10_000)],
                         test_slices or [WordProblemSlice("S3", 128, 500)], batch_size, train_seed, test_seed,
                         num_workers)


class CopyingDataModule(SlicesDataModule):
    """Copying (data/copying.py); slices are CopyingSlice."""

    def __init__(self, vocab_size: int = 29, train_slices: list[CopyingSlice] | None = None,
                 test_slices: list[CopyingSlice] | None = None, batch_size: int = 64, train_seed: int = 0,
                 test_seed: int = 1_000_003, num_workers: int = 0):
        super().__init__(vocab_size, train_slices or [CopyingSlice(16, 26, 10_000)],
                         test_slices or [CopyingSlice(32, 26, 500)], batch_size, train_seed, test_seed,
                         num_workers)


class ForgettingMQARDataModule(SlicesDataModule):
    """Zoology's forgetting MQAR (data/mqar_variants.py); slices are ForgettingMQARSlice."""

    def __init__(self, vocab_size: int = 8192, train_slices: list[ForgettingMQARSlice] | None = None,
                 test_slices: list[ForgettingMQARSlice] | None = None, batch_size: int = 64,
                 train_seed: int = 0, test_seed: int = 1_000_003, num_workers: int = 0):
        super().__init__(vocab_size, train_slices or [ForgettingMQARSlice(64, 8, 4, 10_000)],
                         test_slices or [ForgettingMQARSlice(64, 8, 4, 500)], batch_size, train_seed,
                         test_seed, num_workers)


class CompositionalMQARDataModule(SlicesDataModule):
    """Zoology's compositional MQAR (data/mqar_variants.py); slices are CompositionalMQARSlice."""

    def __init__(self, vocab_size: int = 8192, train_slices: list[CompositionalMQARSlice] | None = None,
                 test_slices: list[CompositionalMQARSlice] | None = None, batch_size: int = 64,
                 train_seed: int = 0, test_seed: int = 1_000_003, num_workers: int = 0):
        super().__init__(vocab_size, train_slices or [CompositionalMQARSlice(64, 4, 10_000)],
                         test_slices or [CompositionalMQARSlice(64, 4, 500)], batch_size, train_seed,
                         test_seed, num_workers)
