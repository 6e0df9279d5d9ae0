"""LightningDataModule serving MQAR: training slices mixed, test slices reported one by one."""
from __future__ import annotations

from recall_lm.data.mqar import MQARSlice
from recall_lm.data.slices_datamodule import SliceBatches, SlicesDataModule

__all__ = ["MQARDataModule", "SliceBatches"]


class MQARDataModule(SlicesDataModule):
    """MQAR train/test sets generated in memory from MQARSlice settings (see ``SlicesDataModule``).

    Args:
        vocab_size: the MQAR vocabulary (Zoology: 8192); must match the model's.
        train_slices / test_slices: lists of MQARSlice settings.
        batch_size, train_seed, test_seed, num_workers, shuffle: as in ``SlicesDataModule``.
    """

    def __init__(
        self,
        vocab_size: int = 8192,
        train_slices: list[MQARSlice] | None = None,
        test_slices: list[MQARSlice] | None = None,
        batch_size: int = 64,
        train_seed: int = 0,
        test_seed: int = 1_000_003,
        num_workers: int = 0,
        shuffle: bool = True,
    ):
        for name, slices in (("train_slices", train_slices), ("test_slices", test_slices)):
            if slices is not None and not len(slices):
                raise ValueError(f"MQARDataModule.{name} is empty: give at least one slice, or leave it out "
                                 "for the default")
        super().__init__(vocab_size, train_slices or [MQARSlice(64, 4, 10_000)],
                         test_slices or [MQARSlice(64, 4, 1_000)], batch_size, train_seed, test_seed,
                         num_workers, shuffle)
