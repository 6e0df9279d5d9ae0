"""A LightningDataModule over synthetic "slices": MQAR and the trainable probes share it.

A slice follows the probe contract (recall_lm.data.probe): a ``name`` (e.g. "L64_kv8"), ``seq_len``,
``num_examples`` and ``generate(vocab_size, seed) -> (inputs [N, T], labels [N, T])``. Training slices
are cut into whole batches and mixed; each test slice is validated on its own and reported as
``val/acc/<name>``.
"""
from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from recall_lm.data.probe import check_generated, check_slice
from recall_lm.data.resumable import resumable_loader


class SliceBatches(Dataset):
    """Pre-cut batches of one or more slices; item i is a whole batch (inputs, labels) of one slice.

    Batches never mix sequence lengths. Being a map-style dataset of batches, it is ordered and
    sharded over ranks by a ``ResumableSampler`` like any other dataset.
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


class SlicesDataModule(L.LightningDataModule):
    """Train/test sets generated in memory from slices (train and test seeds differ).

    Args:
        vocab_size: the task's vocabulary; must match the model's.
        train_slices / test_slices: lists of slice settings.
        batch_size: examples per batch (per device).
        shuffle: visit the training batches in a seeded random order per epoch (``train_seed + epoch``);
            False keeps them in order, so rank r of R takes batches r, r + R, ... and two ranks with
            half the batch see exactly the examples of one rank with the whole batch.

    The training order is resumable: a run restarted from a mid-epoch checkpoint continues with the
    batch after the last one it trained on (``recall_lm.data.resumable``).
    """

    def __init__(self, vocab_size: int, train_slices: list, test_slices: list, batch_size: int = 64,
                 train_seed: int = 0, test_seed: int = 1_000_003, num_workers: int = 0, shuffle: bool = True):
        super().__init__()
        kind = type(self).__name__
        if not train_slices or not test_slices:
            raise ValueError(f"{kind} needs train_slices and test_slices")
        if batch_size < 1:
            raise ValueError(f"{kind}.batch_size must be ≥ 1, got {batch_size}")
        if vocab_size < 2:
            raise ValueError(f"{kind}.vocab_size must be ≥ 2, got {vocab_size}")
        self.vocab_size, self.batch_size, self.num_workers, self.shuffle = (
            vocab_size,
            batch_size,
            num_workers,
            shuffle,
        )
        self.train_slices, self.test_slices = list(train_slices), list(test_slices)
        self.train_seed, self.test_seed = train_seed, test_seed
        for which, items in (("train_slices", self.train_slices), ("test_slices", self.test_slices)):
            for i, item in enumerate(items):
                check_slice(item, f"{kind}.{which}[{i}]")
        names = [s.name for s in self.test_slices]
        if len(set(names)) != len(names):
            raise ValueError(f"{kind}.test_slices repeats a setting: {names}")
        if any(s.num_examples < batch_size for s in self.train_slices):
            raise ValueError(f"every {kind} train slice needs num_examples ≥ batch_size={batch_size}")
        self._train = self._test = None

    @property
    def val_slice_names(self) -> list[str]:
        return [s.name for s in self.test_slices]

    def _generate(self, item, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, labels = item.generate(self.vocab_size, seed=seed)
        check_generated(item, inputs, labels, self.vocab_size)
        return inputs, labels

    def setup(self, stage: str | None = None):
        if self._train is None:
            train = [self._generate(s, self.train_seed + i) for i, s in enumerate(self.train_slices)]
            self._train = SliceBatches(train, self.batch_size, seed=self.train_seed)
            self._test = [
                TensorDataset(*self._generate(s, self.test_seed + i)) for i, s in enumerate(self.test_slices)
            ]

    def train_dataloader(self):
        return resumable_loader(self._train, batch_size=None, shuffle=self.shuffle, seed=self.train_seed,
                                num_workers=self.num_workers)

    def val_dataloader(self):
        return [DataLoader(d, batch_size=self.batch_size, num_workers=self.num_workers) for d in self._test]
