"""One data loader for training, validation, benchmarks and tests: persistent workers, pinned
memory, and an epoch-aware sampler.

Why persistent: starting loader processes every epoch costs seconds per epoch and re-forks the
memory maps; why pinned: the host-to-device copy of a pinned batch is asynchronous on CUDA.
The sampler hands out ``(position, epoch)`` keys, so a persistent worker knows the epoch
without shared state and :class:`~ich.data.datasets.SliceDataset` seeds each sample's draws
from (seed, epoch, sample): the same batches and augmentation for any worker count and after
an exact resume.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ich.data.datasets import collate_slices

#: Positions of one epoch, a pure function of the epoch number.
OrderFn = Callable[[int], np.ndarray]


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(position, epoch)`` for the positions ``order(epoch)``.

    Each iteration uses the epoch set by :meth:`set_epoch`, then advances it by one (so a loader
    iterated again without ``set_epoch`` sees the next epoch's order and augmentation).
    """

    def __init__(self, order: OrderFn, epoch: int = 0) -> None:
        self.order = order
        self._epoch = epoch

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next iteration covers."""
        self._epoch = epoch

    def __len__(self) -> int:
        return len(self.order(self._epoch))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self._epoch
        self._epoch += 1
        for k in self.order(epoch):
            yield int(k), epoch


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: one thread per worker, numpy/random seeded from torch."""
    # Never call cv2.setNumThreads here: resizing OpenCV's pool in a forked child deadlocks
    # when the parent had started it. The workers only use cv2.addWeighted (not threaded).
    torch.set_num_threads(1)
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def loader_workers(requested: int) -> int:
    """``requested`` loader processes, at most one per CPU core: more only compete for the same
    cores (the recipe's 4 on a 2-core machine). Results do not depend on the count."""
    return max(0, min(requested, os.cpu_count() or 1))


def epoch_loader(
    dataset: Dataset[Any],
    order: OrderFn,
    batch_size: int,
    workers: int,
    seed: int,
    collate_fn: Any = collate_slices,
) -> tuple[DataLoader[Any], EpochSampler]:
    """The loader (persistent workers, pinned memory on CUDA) and its sampler.

    Build it once per stage; call ``sampler.set_epoch(e)`` before iterating epoch ``e``.
    """
    sampler = EpochSampler(order)
    gen = torch.Generator().manual_seed(seed)
    workers = loader_workers(workers)
    loader = DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
        collate_fn=collate_fn, generator=gen, worker_init_fn=seed_worker,
        persistent_workers=workers > 0, pin_memory=torch.cuda.is_available(),
        prefetch_factor=4 if workers > 0 else None,
    )
    return loader, sampler


def slice_loader(
    dataset: Dataset[Any],
    batch_size: int,
    shuffle: bool,
    workers: int,
    seed: int,
    drop_last: bool = False,
    collate_fn: Any = collate_slices,
) -> DataLoader[Any]:
    """:func:`epoch_loader` over a seeded permutation (``shuffle``) or the dataset's order.

    Args:
        dataset: A :class:`~ich.data.datasets.SliceDataset` (or a dataset taking the same keys).
        batch_size: Samples per batch.
        shuffle: A new permutation each epoch, a pure function of (seed, epoch).
        workers: Loader processes (0 = in this process).
        seed: Seeds the permutation and the workers.
        drop_last: Drop a last incomplete batch (BatchNorm dislikes a batch of 1).
        collate_fn: Batch assembly.
    """
    n = len(dataset)  # type: ignore[arg-type]

    def order(epoch: int) -> np.ndarray:
        idx = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
        return idx[: n - n % batch_size] if drop_last else idx

    return epoch_loader(dataset, order, batch_size, workers, seed, collate_fn)[0]
