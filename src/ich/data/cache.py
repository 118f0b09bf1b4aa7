"""The preprocessing cache: decode every DICOM once, read int16 HU at random forever after.

Layout of a cache folder ``CACHE``::

    CACHE/cache.json            format, PreprocessSpec (+ its key), chunk size, counts
    CACHE/catalog.parquet       one row per input file (see ich.data.catalog)
    CACHE/chunks/NNNNN.npy      int16 (n_ok, size, size): the ok slices of chunk NNNNN
    CACHE/chunks/NNNNN.parquet  the chunk's catalog rows (written last: marks the chunk done)

Why chunks: the sorted file list is cut into fixed chunks (chunk k = files[k*c:(k+1)*c]), each
built by one worker process into a temporary file and renamed into place. A killed run leaves
only ``*.tmp`` files (removed on the next run), a rerun skips finished chunks, and ``--shard I/N``
lets several processes or machines build chunks k with k % N == I into one folder. Memory is
bounded by one chunk per worker, whatever the number of files. :func:`ich.data.build.build_cache`
writes a cache, :class:`SliceCache` reads one (training),
:func:`ich.data.preprocess.preprocess_hu` is the per-slice transform shared with inference.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ich.data.preprocess import PreprocessSpec
from ich.errors import CacheError
from ich.labels import LABELS

#: Written into cache.json; bumped when the layout changes.
CACHE_FORMAT = "ich-cache/1"


def chunk_paths(root: Path, k: int) -> tuple[Path, Path]:
    """(images .npy, rows .parquet) of chunk ``k``."""
    base = root / "chunks" / f"{k:05d}"
    return base.with_suffix(".npy"), base.with_suffix(".parquet")


def read_cache_json(root: Path) -> dict[str, Any]:
    """The cache's description; CacheError when the folder is not a finished cache."""
    path = Path(root) / "cache.json"
    if not path.is_file():
        raise CacheError(f"{root}: not a finished ich cache (no cache.json); run `ich prepare`")
    try:
        info: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CacheError(f"{path}: unreadable ({exc})") from exc
    if info.get("format") != CACHE_FORMAT:
        raise CacheError(f"{path}: format {info.get('format')!r}, expected {CACHE_FORMAT!r}")
    return info


class SliceCache:
    """Random access to the preprocessed slices of a cache folder.

    The *cache index* 0..N-1 numbers the ok slices ordered by (study, series, slice_index);
    :attr:`catalog` row ``i`` describes image ``i``. Chunk arrays are memory-mapped lazily, per
    process: the object pickles without its maps, so DataLoader workers (fork or spawn) each open
    their own.

    Args:
        root: The cache folder written by :func:`build_cache` / ``ich prepare``.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        info = read_cache_json(self.root)
        self.info = info
        self.spec = PreprocessSpec.from_dict(info["spec"])
        self.size = self.spec.size
        full = pd.read_parquet(self.root / "catalog.parquet")
        ok = full["status"] == "ok"
        self._errors = full[~ok].reset_index(drop=True)
        cat = full[ok].sort_values(
            ["study_instance_uid", "series_instance_uid", "slice_index"], kind="stable"
        )
        self.catalog: pd.DataFrame = cat.reset_index(drop=True)
        self._chunk = self.catalog["chunk"].to_numpy(dtype=np.int64)
        self._row = self.catalog["row"].to_numpy(dtype=np.int64)
        # Caches made before label sets were free hold the six RSNA labels.
        self.label_names: tuple[str, ...] = tuple(info.get("label_names", LABELS))
        self._labels = self.catalog[list(self.label_names)].to_numpy(dtype=np.float32)
        series = self.catalog["series_instance_uid"].astype(str).to_numpy()
        starts = np.r_[True, series[1:] != series[:-1]] if len(series) else np.zeros(0, bool)
        start_pos = np.flatnonzero(starts)
        ends = np.r_[start_pos[1:], len(series)]
        lengths = ends - start_pos
        self._series_start = np.repeat(start_pos, lengths)
        self._series_end = np.repeat(ends, lengths)  # exclusive
        self._maps: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._chunk)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_maps"] = {}  # never pickle open memmaps: each process maps its own
        return state

    def _map(self, k: int) -> np.ndarray:
        arr = self._maps.get(k)
        if arr is None:
            path, _ = chunk_paths(self.root, k)
            try:
                arr = np.load(path, mmap_mode="r")
            except OSError as exc:
                raise CacheError(f"{path}: chunk missing or unreadable ({exc}); rebuild") from exc
            self._maps[k] = arr
        return arr

    def image(self, i: int) -> np.ndarray:
        """int16 (size, size) HU of cache index ``i`` (a copy, safe to modify)."""
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"cache index {i} out of range 0..{len(self) - 1}")
        return np.array(self._map(int(self._chunk[i]))[self._row[i]])

    def images(self, idx: np.ndarray | list[int]) -> np.ndarray:
        """int16 (n, size, size) for several cache indices, read chunk by chunk."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        out = np.empty((len(idx), self.size, self.size), dtype=np.int16)
        if len(idx) == 0:
            return out
        if idx.min() < 0 or idx.max() >= len(self):
            raise IndexError(f"cache indices out of range 0..{len(self) - 1}")
        chunks = self._chunk[idx]
        for k in np.unique(chunks):
            sel = np.flatnonzero(chunks == k)
            out[sel] = self._map(int(k))[self._row[idx[sel]]]
        return out

    @property
    def labels(self) -> np.ndarray:
        """float32 (N, K), one column per :attr:`label_names` entry; NaN where unlabelled."""
        return self._labels

    @property
    def has_labels(self) -> bool:
        """Whether every slice has labels (a labelled training cache)."""
        return bool(len(self)) and not np.isnan(self._labels).any()

    def neighbours(self, i: int, offsets: tuple[int, ...] | list[int] = (-1, 0, 1)) -> list[int]:
        """Cache indices of the slices at ``offsets`` along the series, clamped at its ends."""
        lo, hi = int(self._series_start[i]), int(self._series_end[i]) - 1
        return [min(max(int(i) + int(o), lo), hi) for o in offsets]

    def series_index(self) -> dict[str, np.ndarray]:
        """series_instance_uid -> cache indices of its slices, in slice order."""
        out: dict[str, np.ndarray] = {}
        uids = self.catalog["series_instance_uid"].astype(str).to_numpy()
        for start in np.unique(self._series_start):
            out[str(uids[start])] = np.arange(start, self._series_end[start])
        return out

    @property
    def errors(self) -> pd.DataFrame:
        """Catalog rows of the files that could not be cached, with their reasons."""
        return self._errors
