"""Torch datasets over the preprocessing cache: slices for the CNN (series for the study model
are in :mod:`ich.data.sequences`).

Training never touches DICOM: :class:`SliceDataset` reads int16 HU from a
:class:`ich.data.cache.SliceCache` (memory-mapped chunks) and windows them on the fly, so the
window choice, window jitter and neighbour slices stay training options instead of being baked
into image files as the 2019 teams did with PNGs.

Channels (:class:`ChannelSpec`) are windows x neighbour offsets, offset-major::

    ChannelSpec()                                   # brain, subdural, soft tissue of slice s
    ChannelSpec(("brain",), (-1, 0, 1))             # brain window of s-1, s, s+1
    ChannelSpec(DEFAULT_WINDOWS, (-1, 0, 1))        # 9 channels: [s-1: b, sd, st], [s: ...], ...

Every random draw of :class:`SliceDataset` (window jitter, v2 per-sample transforms) comes from
a generator seeded by (dataset ``seed``, epoch, sample): the same sample in the same epoch is
augmented the same way whatever the worker count, the batch it lands in, or a resume in between.
The epoch travels with each sample key (``(position, epoch)`` from
:class:`ich.data.loader.EpochSampler`), so persistent loader workers need no state from the
main process. Sequence crops and reversals (:mod:`ich.data.sequences`) are seeded the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol

import cv2
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F  # noqa: N812
from torch.utils.data import Dataset, default_collate, get_worker_info

from ich.data.augment import AugmentConfig, build_sample_transform
from ich.dicom.windowing import DEFAULT_WINDOWS, Window, resolve_windows
from ich.errors import ConfigError
from ich.labels import LABELS


class CacheLike(Protocol):
    """What the datasets need from :class:`ich.data.cache.SliceCache` (tests use fakes)."""

    size: int
    catalog: pd.DataFrame

    def images(self, idx: np.ndarray | list[int]) -> np.ndarray: ...

    @property
    def labels(self) -> np.ndarray: ...

    def series_index(self) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class ChannelSpec:
    """Which windows of which neighbour slices form the CNN's input channels.

    Attributes:
        windows: Window names (``ich.dicom.windowing.WINDOWS``) or ``"C,W"`` strings.
        offsets: Slice offsets along the series (0 = the slice itself); clamped at series ends.
    """

    windows: tuple[str, ...] = DEFAULT_WINDOWS
    offsets: tuple[int, ...] = (0,)

    def __post_init__(self) -> None:
        if not self.windows or not self.offsets:
            raise ConfigError("ChannelSpec needs at least one window and one offset")
        try:
            resolve_windows(self.windows)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    @property
    def n_channels(self) -> int:
        """C = len(windows) x len(offsets)."""
        return len(self.windows) * len(self.offsets)

    def resolved(self) -> tuple[Window, ...]:
        """The windows as :class:`Window` objects (centre/width in HU)."""
        return resolve_windows(self.windows)

    def channel_names(self) -> list[str]:
        """Human names in channel order, e.g. ``["brain@-1", "brain@+0", "brain@+1"]``."""
        return [f"{w}@{o:+d}" for o in self.offsets for w in self.windows]

    def window_triples(self) -> list[list[Any]]:
        """``[[name, center, width], ...]`` as stored in checkpoints."""
        return [[w.name, w.center, w.width] for w in self.resolved()]

    def to_dict(self) -> dict[str, Any]:
        """Plain lists for YAML / JSON."""
        return {"windows": list(self.windows), "offsets": [int(o) for o in self.offsets]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChannelSpec:
        """Inverse of :meth:`to_dict` (also accepts ``[name, c, w]`` window triples)."""
        unknown = sorted(set(data) - {"windows", "offsets"})
        if unknown:
            raise ConfigError(f"unknown channel keys {unknown}; known: windows, offsets")
        windows = data.get("windows", DEFAULT_WINDOWS)
        names = tuple(
            w if isinstance(w, str) else f"{float(w[1]):g},{float(w[2]):g}" for w in windows
        )
        return cls(names, tuple(int(o) for o in data.get("offsets", (0,))))


def neighbour_table(cache: CacheLike, indices: np.ndarray, offsets: Sequence[int]) -> np.ndarray:
    """Cache indices (n, len(offsets)) of each slice's neighbours, clamped at series ends.

    Computed once, vectorised per series, so ``__getitem__`` does no Python work per offset.
    """
    n_cache = len(cache.catalog)
    table = np.empty((n_cache, len(offsets)), dtype=np.int64)
    offs = np.asarray(offsets, dtype=np.int64)
    for members in cache.series_index().values():
        pos = np.arange(len(members))[:, None] + offs[None, :]  # (T, n_off)
        table[members] = members[np.clip(pos, 0, len(members) - 1)]
    return table[np.asarray(indices, dtype=np.int64)]


OutDtype = Literal["float32", "uint8"]


def window_into(
    images: np.ndarray, rows: np.ndarray, center: np.ndarray, width: np.ndarray, out: np.ndarray
) -> None:
    """Window HU into a preallocated batch, per sample and window, offset-major channels.

    ``out[j, o * n_win + w] = clip((images[rows[j, o]] - (c - w/2)) / w, 0, 1)`` (x 255 and
    rounded for a uint8 ``out``). OpenCV's saturating ``addWeighted`` does the affine map, the
    clip and the cast in one pass over int16 input - 3-4x faster than numpy/torch elementwise
    ops on one core, which is the loader's bottleneck. It is not multi-threaded in OpenCV, so
    it is safe in forked loader workers (cv2 functions that use OpenCV's thread pool are not).

    Args:
        images: HU (u, S, S), int16 or float32.
        rows: (n, n_off) row of ``images`` for each sample's offsets.
        center: Window centres (n, n_win) in HU.
        width: Window widths (n, n_win) in HU.
        out: (n, n_off * n_win, S, S) float32 or uint8, written in place.
    """
    n_win = center.shape[1]
    uint8 = out.dtype == np.uint8
    depth, scale = (cv2.CV_8U, 255.0) if uint8 else (cv2.CV_32F, 1.0)
    for j in range(rows.shape[0]):
        for o in range(rows.shape[1]):
            src = images[rows[j, o]]  # (S, S)
            for w in range(n_win):
                dst = out[j, o * n_win + w]
                alpha = scale / float(width[j, w])
                beta = -(float(center[j, w]) - float(width[j, w]) / 2.0) * alpha
                cv2.addWeighted(src, alpha, src, 0.0, beta, dst=dst, dtype=depth)
                if not uint8:  # uint8 saturates by itself; float needs the [0, 1] clip
                    np.clip(dst, 0.0, 1.0, out=dst)


def _new_batch(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor, in shared memory inside a loader worker.

    Writing the batch straight into shared memory saves the copy that sending it to the main
    process would otherwise make (what ``default_collate`` does for its stacks).
    """
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    numel = int(np.prod(shape))
    storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(numel, device="cpu")
    return torch.empty(0, dtype=dtype).new(storage).resize_(shape)


class SliceItem(NamedTuple):
    """One training sample: x (C, S, S) float32 in [0, 1], y (6,) float32 (NaN unlabelled),
    and the cache index of the slice."""

    x: torch.Tensor
    y: torch.Tensor
    cache_index: int


class _StackedItems(list[SliceItem]):
    """A list of SliceItems that also carries the batch already stacked (saves a copy)."""

    stacked: tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class SliceDataset(Dataset[SliceItem]):
    """Windowed slices (with neighbours) from the cache, optionally augmented.

    Args:
        cache: A :class:`ich.data.cache.SliceCache` (or anything with its interface).
        indices: Cache indices of the samples (e.g. one fold's slices).
        channels: Windows x offsets.
        input_size: Side S of the output; the HU are resized (bilinear, antialiased) only when
            the cache was built at another size.
        augment: Train-time augmentation or None (evaluation). Window jitter is always done
            here (it needs HU); geometric/photometric ops too when ``augment.mode == "sample"``,
            else by :class:`ich.data.augment.BatchAugment` in the training loop.
        dtype: ``"float32"`` in [0, 1], or ``"uint8"`` (window x 255, rounded): 4x fewer bytes
            through the loader's shared memory and the host-to-device copy, the fast path on
            few cores; :func:`ich.data.augment.prepare_batch` turns it back into float32 on the
            device. The quantisation step (width / 255: 0.3 HU in the brain window) is far
            below CT noise.
        seed: Seeds every augmentation draw, with the epoch and the sample (see module doc).
    """

    def __init__(
        self,
        cache: CacheLike,
        indices: np.ndarray | Sequence[int],
        channels: ChannelSpec,
        input_size: int,
        augment: AugmentConfig | None = None,
        dtype: OutDtype = "float32",
        seed: int = 0,
    ) -> None:
        if dtype not in ("float32", "uint8"):
            raise ConfigError(f"SliceDataset dtype must be 'float32' or 'uint8', got {dtype!r}")
        self.dtype = dtype
        self.seed = int(seed)
        self.cache = cache
        self.indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        self.channels = channels
        self.input_size = int(input_size)
        self.augment = augment if augment is not None and augment.enabled else None
        self._nbr = neighbour_table(cache, self.indices, channels.offsets)  # (n, n_off)
        wins = channels.resolved()
        self._center = torch.tensor([w.center for w in wins], dtype=torch.float32)  # (n_win,)
        self._width = torch.tensor([w.width for w in wins], dtype=torch.float32)
        self._transform = (
            build_sample_transform(self.augment, self.input_size)
            if self.augment is not None and self.augment.mode == "sample"
            else None
        )

    def __len__(self) -> int:
        return len(self.indices)

    def _rngs(self, ks: np.ndarray, epoch: int) -> list[np.random.Generator]:
        """One generator per sample, seeded by (seed, epoch, cache index)."""
        idx = self.indices[ks]
        return [np.random.default_rng([self.seed, epoch, int(i)]) for i in idx]

    def _windows(self, rngs: list[np.random.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample window centres and widths (n, n_win), jittered when augmenting."""
        n = len(rngs)
        center = self._center.expand(n, -1)
        width = self._width.expand(n, -1)
        aug = self.augment
        if aug is None:
            return center, width
        draws = torch.from_numpy(np.stack([r.random((2, center.shape[1])) for r in rngs]))
        c_j = (2 * draws[:, 0].float() - 1) * aug.window_center_hu
        w_j = 1 + (2 * draws[:, 1].float() - 1) * aug.window_width_frac
        return center + c_j, (width * w_j).clamp(min=1.0)

    def _load(self, ks: np.ndarray, epoch: int = 0) -> torch.Tensor:
        """Windowed, resized, per-sample-augmented batch (n, C, S, S) for dataset positions."""
        n, size = len(ks), self.input_size
        rngs = self._rngs(ks, epoch) if self.augment is not None else []
        uniq, inverse = np.unique(self._nbr[ks], return_inverse=True)  # read each slice once
        images = self.cache.images(uniq)  # (u, H, W) int16
        if images.shape[-2:] != (size, size):
            hu = torch.from_numpy(images).float().unsqueeze(1)  # (u, 1, H, W)
            hu = F.interpolate(hu, size=(size, size), mode="bilinear", antialias=True,
                               align_corners=False)
            images = hu.squeeze(1).numpy()  # (u, S, S) float32
        center, width = self._windows(rngs) if rngs else self._windows_plain(n)  # (n, n_win)
        dtype = torch.uint8 if self.dtype == "uint8" else torch.float32
        x = _new_batch((n, self.channels.n_channels, size, size), dtype)
        rows = inverse.reshape(n, len(self.channels.offsets))
        window_into(images, rows, center.numpy(), width.numpy(), x.numpy())
        if self._transform is not None:
            for j in range(n):  # v2 per sample, on [0, 1] floats, drawing from its own seed
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(int(rngs[j].integers(2**62)))
                    xj = self._transform(x[j].float() / 255.0 if dtype == torch.uint8 else x[j])
                x[j] = xj.mul(255.0).round_() if dtype == torch.uint8 else xj
        return x

    def _windows_plain(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._center.expand(n, -1), self._width.expand(n, -1)

    def __getitem__(self, k: int | tuple[int, int]) -> SliceItem:
        pos, epoch = k if isinstance(k, tuple) else (k, 0)
        x = self._load(np.array([pos]), epoch)[0]
        i = int(self.indices[pos])
        return SliceItem(x, torch.from_numpy(self.cache.labels[i].astype(np.float32)), i)

    def __getitems__(self, ks: Sequence[int | tuple[int, int]]) -> list[SliceItem]:
        """Batched fetch (used by DataLoader): one read and one windowing op for the batch.

        Keys are dataset positions, or ``(position, epoch)`` pairs from an
        :class:`~ich.data.loader.EpochSampler` (one epoch per batch).
        """
        keyed = [k if isinstance(k, tuple) else (int(k), 0) for k in ks]
        pos = np.asarray([k for k, _ in keyed], dtype=np.int64)
        x = self._load(pos, keyed[0][1] if keyed else 0)  # (n, C, S, S)
        idx = self.indices[pos]
        y = torch.from_numpy(self.cache.labels[idx].astype(np.float32))  # (n, 6)
        items = _StackedItems(SliceItem(x[j], y[j], int(idx[j])) for j in range(len(pos)))
        items.stacked = (x, y, torch.from_numpy(idx))
        return items

    def labels(self) -> np.ndarray:
        """float32 (n, 6) labels of the samples, in dataset order (for samplers)."""
        return np.asarray(self.cache.labels[self.indices], dtype=np.float32)


def collate_slices(batch: list[SliceItem]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x (B, C, S, S), y (B, 6), index (B,)) - reuses the stack made by ``__getitems__``."""
    stacked = getattr(batch, "stacked", None)
    if stacked is not None:
        return stacked
    x, y, idx = default_collate(batch)
    return x, y, idx


def oversample_weights(
    labels: np.ndarray, positive: float = 1.0, rare: float = 1.0, rare_threshold: float = 0.02
) -> np.ndarray:
    """Per-sample weights (n,) for ``WeightedRandomSampler`` against class imbalance.

    A slice positive for any label (a bleed, for the RSNA labels) gets ``positive`` x; one
    positive for a label rarer than ``rare_threshold`` (epidural at 0.4% in RSNA) gets ``rare``
    x on top. 1.0 / 1.0 means uniform sampling. Unlabelled (NaN) rows count as negatives.
    Works for any label set: no column is assumed to be ``any``.
    """
    y = np.nan_to_num(np.asarray(labels, dtype=np.float32), nan=0.0)  # (n, K)
    w = np.ones(len(y), dtype=np.float64)
    if len(y) == 0:
        return w
    w[y.max(axis=1) > 0.5] *= positive
    rare_cols = np.flatnonzero(y.mean(axis=0) < rare_threshold)
    if len(rare_cols):
        w[(y[:, rare_cols] > 0.5).any(axis=1)] *= rare
    return w


class SeriesArrays:
    """One preprocessed series shaped like :class:`ich.data.cache.SliceCache`, so that
    :class:`SliceDataset` builds the model input (windows x neighbours) exactly as in training
    (inference and Grad-CAM feed single series through it)."""

    def __init__(self, images: np.ndarray) -> None:
        self._images = images  # (T, S, S) int16 HU
        self.size = int(images.shape[-1])
        self.catalog = pd.DataFrame({"series_instance_uid": ["series"] * len(images)})
        self.labels = np.full((len(images), len(LABELS)), np.nan, dtype=np.float32)

    def images(self, idx: np.ndarray | list[int]) -> np.ndarray:
        """HU images (n, S, S) of the given positions."""
        return self._images[np.asarray(idx, dtype=np.int64)]

    def series_index(self) -> dict[str, np.ndarray]:
        """The one series and its positions in slice order."""
        return {"series": np.arange(len(self._images))}
