"""From an HU slice to the int16 array the models read: one function for training and inference.

:func:`preprocess_hu` is used by the preprocessing cache (``ich prepare``) and by the inference
``Predictor``, so the model sees exactly the same input in both. HU are kept (not windows), so
the windows can still be chosen and jittered when a data loader reads the cache.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from ich.data.catalog import error_row, ok_row
from ich.dicom.headcrop import AIR_HU, crop_resize, crop_resize_any, head_bbox, integer_rescale
from ich.dicom.io import open_stored, read_meta
from ich.errors import CacheError, DicomReadError, IchError

_INT16 = np.iinfo(np.int16)


@dataclass(frozen=True)
class PreprocessSpec:
    """How slices are turned into cached arrays; part of every cache and checkpoint.

    Attributes:
        size: Side of the square output, in pixels.
        crop: Crop to the head (square box around the largest tissue component) before
            resizing; without it the whole image, padded to a square with air, is resized.
        margin: Padding around the head, as a fraction of its larger extent.
        version: Bumped when the algorithm changes, so that old caches are rebuilt.
        hu_range: ``(lo, hi)`` of an 8-bit windowed image source (``ich prepare`` of PNG/JPEG
            slices): HU are clipped to it and quantised to its 256 levels before anything else,
            so DICOM input at inference becomes exactly what the 8-bit images held. None for
            DICOM and 16-bit HU sources (and left out of :meth:`to_dict`, keeping old keys).
    """

    size: int = 256
    crop: bool = True
    margin: float = 0.05
    version: int = 1
    hu_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.size < 8:
            raise ValueError(f"size must be at least 8 pixels, got {self.size}")
        if not 0.0 <= self.margin <= 1.0:
            raise ValueError(f"margin must be in [0, 1], got {self.margin}")
        if self.hu_range is not None and not self.hu_range[0] < self.hu_range[1]:
            raise ValueError(f"hu_range must be (lo, hi) with lo < hi, got {self.hu_range}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON (cache.json, checkpoints)."""
        out = asdict(self)
        if self.hu_range is None:
            del out["hu_range"]  # DICOM caches keep the keys they had before the field existed
        else:
            out["hu_range"] = [float(v) for v in self.hu_range]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessSpec:
        """Inverse of :meth:`to_dict`; unknown keys are an error (a newer format, or a typo)."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown preprocessing keys: {sorted(unknown)}")
        return cls(
            size=int(data.get("size", 256)),
            crop=bool(data.get("crop", True)),
            margin=float(data.get("margin", 0.05)),
            version=int(data.get("version", 1)),
            hu_range=(
                (float(data["hu_range"][0]), float(data["hu_range"][1]))
                if data.get("hu_range") is not None else None
            ),
        )

    def key(self) -> str:
        """Short stable hash of the settings: a cache built with other settings has another key."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def full_box(shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """The square box that holds the whole image, centred (padding goes to the short side)."""
    height, width = shape[0], shape[1]
    side = max(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return top, top + side, left, left + side


def _to_int16(out: np.ndarray) -> np.ndarray:
    """Round float HU to the nearest integer and clip to int16 (in place where possible)."""
    np.rint(out, out=out)
    np.clip(out, _INT16.min, _INT16.max, out=out)
    return out.astype(np.int16)


def _box(img: np.ndarray, spec: PreprocessSpec, rescale: tuple[float, float] | None = None
         ) -> tuple[int, int, int, int]:
    """The crop box of a slice (head box, or the whole image padded to a square)."""
    if img.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {img.shape}")
    return head_bbox(img, spec.margin, rescale) if spec.crop else full_box(img.shape)


def preprocess_hu(hu: np.ndarray, spec: PreprocessSpec = PreprocessSpec()) -> np.ndarray:
    """Crop to the head, resize and round to int16 HU.

    Args:
        hu: HU image (H, W), any real dtype.
        spec: The preprocessing settings.

    Returns:
        int16 (spec.size, spec.size): HU rounded to the nearest integer, clipped to int16.
    """
    hu = np.asarray(hu)
    if spec.hu_range is not None:
        hu = quantize_window(hu, spec.hu_range)
    return _to_int16(crop_resize(hu, _box(hu, spec), spec.size))


def quantize_window(hu: np.ndarray, hu_range: tuple[float, float]) -> np.ndarray:
    """HU as an 8-bit windowed image holds them: clipped to ``hu_range``, 256 levels.

    Why: a model trained on 8-bit windowed images never saw HU outside the window nor between
    its levels; DICOM input goes through the same loss so that the model sees the same input.
    """
    lo, hi = hu_range
    step = (hi - lo) / 255.0
    levels = np.rint((np.clip(np.asarray(hu, dtype=np.float32), lo, hi) - lo) / step)
    return (lo + levels * step).astype(np.float32)


def preprocess_stored(
    stored: np.ndarray, slope: float, intercept: float, spec: PreprocessSpec = PreprocessSpec()
) -> np.ndarray:
    """:func:`preprocess_hu` of ``stored × slope + intercept``, without the full HU image.

    Why: HU are linear in the stored values, so the crop and resize can run on the stored
    integers and only the small result is rescaled; this skips a float32 copy of every
    512 × 512 slice (the largest cost of ``ich prepare`` after decoding). The head box is the
    one of the HU image (same float32 threshold test), and the result equals
    ``preprocess_hu(to_hu(stored, slope, intercept)[0], spec)`` within ±1 HU (rounding:
    integer resizes round in stored units). With slope 1 and an integral intercept (CT almost
    always) the resize runs on the integers; otherwise the crop is resized in float32.

    Args:
        stored: Stored values (H, W) with any wrap fault already undone
            (:func:`ich.dicom.io.read_stored`), any integer or float dtype.
        slope: (0028,1053) Rescale Slope.
        intercept: Rescale Intercept to use (``SliceMeta.rescale_intercept``).
        spec: The preprocessing settings.

    Returns:
        int16 (spec.size, spec.size) HU, as :func:`preprocess_hu`.
    """
    stored = np.asarray(stored)
    if spec.hu_range is not None:  # windowed sources: the plain path, which quantises first
        return preprocess_hu(stored.astype(np.float32) * slope + intercept, spec)
    box = _box(stored, spec, (slope, intercept))
    fill = (AIR_HU - intercept) / slope  # air, in stored units, for crops beyond the image
    kind = stored.dtype
    fill_fits = kind.kind == "f" or (
        kind.kind in "iu" and np.iinfo(kind).min <= fill <= np.iinfo(kind).max
    )
    if not fill_fits:
        # Air in stored units does not fit the stored type (e.g. uint16 with intercept
        # +30000): pad in float32, or the padding would wrap around to a bright value.
        stored, kind = stored.astype(np.float32), np.dtype(np.float32)
    if integer_rescale(kind, slope, intercept):
        small = crop_resize_any(stored, box, spec.size, fill)
        # Clip in stored units so that value + intercept fits int16; the int16 addition may
        # wrap in between but its result is exact (modular arithmetic), in two fast passes.
        info = np.iinfo(kind)
        lo = max(info.min, _INT16.min - int(intercept))
        hi = min(info.max, _INT16.max - int(intercept))
        # Integer max/min in place: np.clip's Python wrapper cost more than the clip itself.
        if lo > info.min:
            np.maximum(small, lo, out=small)
        if hi < info.max:
            np.minimum(small, hi, out=small)
        # 16-bit values reinterpreted in place: the same bits astype(int16) would give
        # (a modular cast), without a copy; 8-bit ones need the widening copy.
        out = small.view(np.int16) if kind.itemsize == 2 else small.astype(np.int16)
        out += np.int16(int(intercept) - (int(intercept) + 2**15) // 2**16 * 2**16)
        return out
    small = crop_resize_any(stored, box, spec.size, fill).astype(np.float32)
    small *= np.float32(slope)
    small += np.float32(intercept)
    return _to_int16(small)


def preprocess_files(
    paths: Sequence[Path], spec: PreprocessSpec, chunk: int, strict: bool = False,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Read and preprocess a list of files into one int16 block plus catalog rows.

    The block is preallocated for the whole list and filled in place (no per-file allocation
    beyond the decoder's); failed files get an error row and no image. This is the unit of work
    of one cache chunk.

    Args:
        paths: The files, in chunk order.
        spec: Preprocessing settings.
        chunk: Chunk number written into the ``chunk`` column.
        strict: Raise :class:`~ich.errors.CacheError` naming the file at the first failure.
        out: int16 (>= len(paths), size, size) to fill instead of a new block (e.g. the
            aligned buffer of :class:`ich.data.chunkfile.ChunkBuffer`).

    Returns:
        int16 (n_ok, size, size) (a view of ``out`` when given) and one catalog row per input
        file (ok rows have ``row`` = their position in the block).
    """
    shape = (len(paths), spec.size, spec.size)
    if out is not None and (out.dtype != np.int16 or out.shape[1:] != shape[1:]
                            or len(out) < len(paths)):
        raise ValueError(f"out must be int16 with room for {shape}, got {out.dtype} {out.shape}")
    block = np.empty(shape, dtype=np.int16) if out is None else out
    rows: list[dict[str, Any]] = []
    n_ok = 0
    with warnings.catch_warnings():
        # RSNA's "ID_..." UIDs are invalid VR UI: one warning per file would drown the progress bar.
        warnings.filterwarnings("ignore", message="Invalid value for VR UI")
        for path in paths:
            # No new Path per file when given Paths: Path(Path) re-parses the string.
            path = path if isinstance(path, Path) else Path(path)
            n_ok += _one_file(path, spec, block, n_ok, rows, chunk, strict)
    return block[:n_ok], rows


def _one_file(
    path: Path,
    spec: PreprocessSpec,
    block: np.ndarray,
    n_ok: int,
    rows: list[dict[str, Any]],
    chunk: int,
    strict: bool,
) -> int:
    """Preprocess one file into ``block[n_ok]`` and append its row; 1 if it was ok, else 0."""
    try:
        with open_stored(path) as (stored, meta):  # may view the file: used inside only
            block[n_ok] = preprocess_stored(stored, meta.rescale_slope, meta.rescale_intercept,
                                            spec)
    except (IchError, OSError) as exc:  # recorded per file: one bad file must not stop the run
        # Only ich's named errors and OS errors: a bug (TypeError, ...) must crash, not become
        # 750k error rows.
        reason = _reason(exc)
        if strict:
            raise CacheError(f"{path}: {reason}") from None
        try:
            header = read_meta(path)
        except (IchError, OSError):
            header = None
        rows.append(error_row(path, reason, type(exc).__name__, header))
        return 0
    rows.append(ok_row(path, meta, chunk, n_ok))
    return 1


def _reason(exc: BaseException) -> str:
    """The error text recorded in the catalog: the reason (and tag) without the path."""
    if isinstance(exc, DicomReadError):
        return exc.reason + (f" [{exc.tag}]" if exc.tag else "")
    return f"{type(exc).__name__}: {exc}"
