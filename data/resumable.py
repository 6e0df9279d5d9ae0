"""A deterministic, rank-sharded, resumable training order, and the DataLoader that checkpoints it.

``ResumableSampler`` (a ``DistributedSampler``, so Lightning neither wraps nor replaces it):

* epoch ``e`` visits ``permutation(seed + e)`` of the dataset (or ``0..n-1`` unshuffled), cut to a
  multiple of the number of ranks (``drop_last`` semantics: every rank gets the same count);
* rank ``r`` of ``R`` takes positions ``r, r + R, r + 2R, ...`` of that global order;
* after ``load_state_dict({"epoch": e, "consumed": k·R, ...})`` the epoch-``e`` iteration starts at
  global position ``k·R``; the rest of the global order is re-sharded, so with the same ``R`` each
  rank continues exactly where it stopped, and with another ``R`` the global order still continues.

``ResumableDataLoader`` is what Lightning checkpoints: Lightning 2.6 saves ``state_dict()`` of every
train DataLoader that has ``state_dict``/``load_state_dict`` (``fit_loop.on_save_checkpoint``,
``CombinedLoader._state_dicts``) and restores it before its first ``iter()`` on a mid-epoch restart
(``FitLoop.setup_data`` → ``_load_combined_loader_states``). The loader counts the batches its
iterator has handed out in the current epoch; with a sized loader Lightning does not prefetch, so
at a checkpoint that count is exactly the number of batches trained on. Its state holds plain ints,
so checkpoints still load with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler


def _default_rank_and_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class ResumableSampler(DistributedSampler):
    """Order depends only on (seed, epoch); sharded by rank; can start mid-epoch (see module docstring).

    Args:
        dataset: anything with ``len``.
        num_replicas, rank: the data-parallel world; default: torch.distributed's, else (1, 0).
        shuffle: permute each epoch (else the dataset order).
        seed: the permutation of epoch ``e`` is seeded with ``seed + e``.
    """

    def __init__(self, dataset: Dataset, num_replicas: int | None = None, rank: int | None = None,
                 shuffle: bool = True, seed: int = 0):
        default_rank, default_world = _default_rank_and_world()
        num_replicas = default_world if num_replicas is None else int(num_replicas)
        rank = default_rank if rank is None else int(rank)
        if len(dataset) < num_replicas:
            raise ValueError(
                f"ResumableSampler: {len(dataset)} samples cannot be shared by {num_replicas} ranks"
            )
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=True
        )
        self.start = 0          # global position where the resumed epoch starts
        self.start_epoch = -1   # the epoch ``start`` applies to

    def global_order(self, epoch: int) -> list[int]:
        """All ranks' samples of ``epoch`` in order (length ``num_samples · num_replicas``)."""
        n = len(self.dataset)
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + epoch)).tolist()
        else:
            order = list(range(n))
        return order[: self.total_size]

    def __iter__(self) -> Iterator[int]:
        order = self.global_order(self.epoch)
        start = self.start if self.start_epoch == self.epoch else 0
        rest = order[start:]
        rest = rest[: len(rest) - len(rest) % self.num_replicas]
        return iter(rest[self.rank :: self.num_replicas])

    def remaining(self) -> int:
        """Samples this rank will still yield in the current epoch."""
        start = self.start if self.start_epoch == self.epoch else 0
        return (self.total_size - min(start, self.total_size)) // self.num_replicas

    def set_start(self, epoch: int, global_position: int) -> None:
        """Begin epoch ``epoch`` at ``global_position`` of its global order (0 = from the beginning)."""
        self.epoch, self.start_epoch = int(epoch), int(epoch)
        self.start = max(0, min(int(global_position), self.total_size))

    def state_dict(self, consumed_per_rank: int = 0) -> dict:
        start = self.start if self.start_epoch == self.epoch else 0
        return {
            "epoch": int(self.epoch),
            "consumed": int(start + consumed_per_rank * self.num_replicas),
            "seed": int(self.seed),
            "num_replicas": int(self.num_replicas),
            "dataset_len": len(self.dataset),
        }

    def load_state_dict(self, state: dict) -> None:
        if (
            state.get("dataset_len", len(self.dataset)) != len(self.dataset)
            or state.get("seed", self.seed) != self.seed
        ):
            raise ValueError(
                f"cannot resume the data order: the checkpoint was saved for {state.get('dataset_len')} "
                f"samples with seed {state.get('seed')}, this run has {len(self.dataset)} with seed "
                f"{self.seed} (did the corpus, seq_len or seed change?)"
            )
        epoch, consumed = int(state["epoch"]), int(state["consumed"])
        if consumed >= self.total_size:  # the saved epoch was complete: the next one starts afresh
            self.set_start(epoch + 1, 0)
        else:  # round down to a whole round of this world size, so every rank starts at the same step
            self.set_start(epoch, consumed - consumed % self.num_replicas)


class ResumableDataLoader(DataLoader):
    """A DataLoader over a ``ResumableSampler`` whose ``state_dict`` records how far the epoch got.

    Works with ``batch_size=None`` too (each dataset item is then a whole batch, as in MQAR).
    """

    def __init__(self, dataset: Dataset, sampler: ResumableSampler, **kwargs):
        if not isinstance(sampler, ResumableSampler):
            raise ValueError("ResumableDataLoader needs a ResumableSampler")
        super().__init__(dataset, sampler=sampler, **kwargs)
        self._yielded = 0  # sampler items handed out by the current iterator, in this epoch
        self._epoch_of_count = -1

    def _items_per_batch(self) -> int:
        return self.batch_size or 1

    def __iter__(self):
        base = super().__iter__()
        sampler: ResumableSampler = self.sampler
        self._yielded, self._epoch_of_count = 0, sampler.epoch
        step = self._items_per_batch()

        def counting():
            remaining = None
            for batch in base:
                if remaining is None:  # the sampler's epoch is fixed once its iteration has begun
                    self._epoch_of_count, remaining = sampler.epoch, sampler.remaining()
                self._yielded = min(remaining, self._yielded + step)
                yield batch

        return counting()

    def state_dict(self) -> dict:
        sampler: ResumableSampler = self.sampler
        consumed = self._yielded if self._epoch_of_count == sampler.epoch else 0
        return sampler.state_dict(consumed_per_rank=consumed)

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)
        self._yielded, self._epoch_of_count = 0, -1


def resumable_loader(
    dataset: Dataset,
    batch_size: int | None,
    *,
    shuffle: bool = True,
    seed: int = 0,
    num_replicas: int | None = None,
    rank: int | None = None,
    **kwargs,
) -> ResumableDataLoader:
    """Shorthand: a ``ResumableDataLoader`` with its ``ResumableSampler`` (``drop_last`` for full batches)."""
    sampler = ResumableSampler(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
    if batch_size is not None and sampler.num_samples < batch_size:
        raise ValueError(f"{sampler.num_samples} samples per rank cannot fill one batch of {batch_size}")
    return ResumableDataLoader(dataset, sampler=sampler, batch_size=batch_size,
                               drop_last=batch_size is not None, **kwargs)

