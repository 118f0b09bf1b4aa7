"""Series of slice features for the study model (stage 2): dataset, batches, augmentation.

The study model reads precomputed per-slice features (:mod:`ich.train.embeddings`) of whole
ordered series, not images; training crops long series to a random window and reverses some
(the head has no preferred scan direction). Like :class:`ich.data.datasets.SliceDataset`, the
dataset owns its randomness: each series' crop and reversal come from a generator seeded by
(dataset ``seed``, epoch, position), so they do not depend on the worker count, on the order
items are fetched in, or on anyone else drawing from torch's global RNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from ich.errors import ConfigError
from ich.labels import LABELS


def reverse_spacing(z_spacing: np.ndarray) -> np.ndarray:
    """Per-slice spacing of a reversed series: (T,) -> (T,).

    ``z_spacing[t]`` is the distance to the *previous* slice (the first slice repeats the
    next's). Reversed, slice t's previous is its old successor:
    ``[z[-1], z[-1], z[-2], ..., z[1]]``.
    """
    z = np.asarray(z_spacing)
    if len(z) < 2:
        return z.copy()
    return np.concatenate([z[-1:], z[:0:-1]])


class SequenceItem(NamedTuple):
    """One series: features (T, D), z_spacing (T,), labels (T, 6) (NaN unlabelled), positions
    (T,) of the slices in the stored series order (after crop / reversal), series uid."""

    features: torch.Tensor
    z_spacing: torch.Tensor
    labels: torch.Tensor
    positions: torch.Tensor
    series: str


class SequenceBatch(NamedTuple):
    """Padded batch: features (B, T, D), z_spacing (B, T), labels (B, T, 6) (0 at padding),
    mask (B, T) True for real slices (prefix mask), positions (B, T) (-1 at padding), series."""

    features: torch.Tensor
    z_spacing: torch.Tensor
    labels: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    series: list[str]


class SequenceDataset(Dataset[SequenceItem]):
    """Per-series sequences of slice features for the study model.

    Args:
        features: series uid -> (T, D) per-slice features in slice order (e.g. out-of-fold CNN
            embeddings, optionally with logits concatenated).
        z_spacing: series uid -> (T,) spacing to the previous slice (mm).
        labels: series uid -> (T, K) labels, or None (prediction: six NaN columns).
        series: The series of this dataset (e.g. one fold's).
        train: Augment: random contiguous window of ``max_len`` slices when a series is longer,
            and reversal with probability ``reverse_p`` (a head read upwards or downwards is the
            same head). Evaluation always sees whole series in stored order.
        max_len: Longest training window (bounds memory for the rare 100+ slice series).
        reverse_p: Reversal probability when training.
        seed: Seeds every crop and reversal, with the epoch and the position. ``None`` draws
            one seed from torch's global RNG here, once (a seeded run stays reproducible; the
            draws themselves never touch the global RNG again).
        epoch: The epoch of plain integer keys (see :meth:`set_epoch`); a key may also be a
            ``(position, epoch)`` pair, as :class:`~ich.data.loader.EpochSampler` hands out.
    """

    def __init__(
        self,
        features: dict[str, np.ndarray],
        z_spacing: dict[str, np.ndarray],
        labels: dict[str, np.ndarray] | None,
        series: Sequence[str],
        train: bool,
        max_len: int = 64,
        reverse_p: float = 0.5,
        seed: int | None = None,
        epoch: int = 0,
    ) -> None:
        missing = [s for s in series if s not in features or s not in z_spacing]
        if missing:
            raise ConfigError(
                f"no features or z_spacing for {len(missing)} series, e.g. {missing[0]}"
            )
        self.features, self.z_spacing, self.labels = features, z_spacing, labels
        first = next(iter(labels.values()), None) if labels else None
        self.num_labels = int(np.shape(first)[1]) if first is not None else len(LABELS)
        self.series = list(series)
        self.train, self.max_len, self.reverse_p = train, int(max_len), float(reverse_p)
        self.seed = int(torch.randint(0, 2**62, (1,))) if seed is None else int(seed)
        self.epoch = int(epoch)

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose crops and reversals plain integer keys get."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.series)

    def __getitem__(self, key: int | tuple[int, int]) -> SequenceItem:
        k, epoch = key if isinstance(key, tuple) else (key, self.epoch)
        uid = self.series[k]
        feats = np.asarray(self.features[uid], dtype=np.float32)  # (T, D)
        z = np.asarray(self.z_spacing[uid], dtype=np.float32)  # (T,)
        n = len(feats)
        y = (
            np.asarray(self.labels[uid], dtype=np.float32)
            if self.labels is not None and uid in self.labels
            else np.full((n, self.num_labels), np.nan, np.float32)
        )
        pos = np.arange(n)
        # Drawn in a fixed order (crop, then reversal) so both are a function of the seed only.
        rng = np.random.default_rng([self.seed, int(epoch), int(k)])
        start, reverse = int(rng.integers(0, max(n - self.max_len, 0) + 1)), rng.random()
        if self.train and n > self.max_len:
            keep = slice(start, start + self.max_len)
            feats, z, y, pos = feats[keep], z[keep].copy(), y[keep], pos[keep]
            if start > 0:
                z[0] = z[1] if len(z) > 1 else z[0]  # the window's first slice has no previous
        if self.train and reverse < self.reverse_p:
            # Copies: a reversed one-slice view counts as contiguous for numpy, yet keeps its
            # negative stride, which torch.from_numpy refuses.
            feats, z, y, pos = (feats[::-1].copy(), reverse_spacing(z).copy(), y[::-1].copy(),
                                pos[::-1].copy())
        return SequenceItem(
            torch.from_numpy(np.ascontiguousarray(feats)),
            torch.from_numpy(np.ascontiguousarray(z)),
            torch.from_numpy(np.ascontiguousarray(y)),
            torch.from_numpy(np.ascontiguousarray(pos)),
            uid,
        )


def collate_sequences(items: list[SequenceItem]) -> SequenceBatch:
    """Pad series to the longest in the batch; the mask marks real slices."""
    b = len(items)
    t = max(len(it.features) for it in items)
    d = items[0].features.shape[1]
    feats = torch.zeros(b, t, d)
    z = torch.zeros(b, t)
    y = torch.zeros(b, t, items[0].labels.shape[1])
    mask = torch.zeros(b, t, dtype=torch.bool)
    pos = torch.full((b, t), -1, dtype=torch.int64)
    for j, it in enumerate(items):
        n = len(it.features)
        feats[j, :n], z[j, :n], y[j, :n] = it.features, it.z_spacing, it.labels
        mask[j, :n] = True
        pos[j, :n] = it.positions
    return SequenceBatch(feats, z, y, mask, pos, [it.series for it in items])
