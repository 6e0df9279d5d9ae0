"""LightningDataModule serving MQAR: training slices mixed, test slices reported one by one."""
from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from data.mqar import MQARSlice


class SliceBatches(Dataset):
    """Pre-cut batches of one or more slices; item i is a whole batch (inputs, labels) of one slice.

    Batches never mix sequence lengths. Being a map-style dataset of batches, it is shuffled and
    sharded over ranks by Lightning's (distributed) sampler like any other dataset.
    """

    def __init__(self, tensors: list[tuple[torch.Tensor, torch.Tensor]], batch_size: int, seed: int):
        generator = torch.Generator().manual_seed(seed)
        self.batches = []
        for inputs, labels in tensors:
            order = torch.randperm(inputs.shape[0], generator=generator)
            for start in range(0, inputs.shape[0] - batch_size + 1, batch_size):
                index = order[start : start + batch_size]
                self.batches.append((inputs[index], labels[index]))

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int):
        return self.batches[i]


class MQARDataModule(L.LightningDataModule):
    """MQAR train/test sets generated in memory from slices (seeds differ between train and test).

    Args:
        vocab_size: the MQAR vocabulary (Zoology: 8192); must match the model's.
        train_slices / test_slices: lists of MQARSlice settings.
        batch_size: examples per batch (per device).
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
    ):
        super().__init__()
        self.vocab_size = vocab_size
        self.train_slices = train_slices or [MQARSlice(64, 4, 10_000)]
        self.test_slices = test_slices or [MQARSlice(64, 4, 1_000)]
        self.batch_size, self.num_workers = batch_size, num_workers
        self.train_seed, self.test_seed = train_seed, test_seed
        names = [s.name for s in self.test_slices]
        if len(set(names)) != len(names):
            raise ValueError(f"MQARDataModule.test_slices repeats a setting: {names}")
        if any(s.num_examples < batch_size for s in self.train_slices):
            raise ValueError(f"every MQAR train slice needs num_examples ≥ batch_size={batch_size}")
        self._train = self._test = None

    @property
    def val_slice_names(self) -> list[str]:
        return [s.name for s in self.test_slices]

    def setup(self, stage: str | None = None):
        if self._train is None:
            train = [s.generate(self.vocab_size, seed=self.train_seed + i) for i, s in enumerate(self.train_slices)]
            self._train = SliceBatches(train, self.batch_size, seed=self.train_seed)
            self._test = [
                TensorDataset(*s.generate(self.vocab_size, seed=self.test_seed + i))
                for i, s in enumerate(self.test_slices)
            ]

    def train_dataloader(self):
        return DataLoader(self._train, batch_size=None, shuffle=True, num_workers=self.num_workers)

    def val_dataloader(self):
        return [DataLoader(d, batch_size=self.batch_size, num_workers=self.num_workers) for d in self._test]
