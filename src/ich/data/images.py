"""Image folders as data: PNG / JPEG / TIFF slices instead of DICOM (``ich prepare --images``).

Many hospital exports and challenges (e.g. the Behold.ai one) ship slices as images. Two kinds:

* ``windowed8``: 8-bit grey images of one display window (e.g. brain 40/80). Values 0..255 map
  linearly onto the window's HU range; HU outside it are gone. The cache records the range in
  its :class:`~ich.data.preprocess.PreprocessSpec` (``hu_range``), so a model trained on it
  clips and quantises DICOM HU the same way at inference (it sees what such images hold).
* ``hu16``: 16-bit images holding HU + ``hu_offset`` (e.g. 32768 or 1024): full HU, as DICOM.

Images carry no patient, study or geometry: each image is its own series (its id is the file
name without extension), so folds split by image; the sequence stage sees one-slice series.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from ich.data.catalog import error_row
from ich.data.preprocess import PreprocessSpec, preprocess_hu
from ich.dicom.meta import SliceMeta
from ich.dicom.series import flatten_meta
from ich.dicom.windowing import resolve_windows
from ich.errors import CacheError, ImageReadError
from ich.labels import strip_extension

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
ImageKind = Literal["windowed8", "hu16"]


@dataclass(frozen=True)
class ImageEncoding:
    """How the grey values of an image folder encode HU.

    Attributes:
        kind: ``windowed8`` or ``hu16`` (see the module docstring).
        window: ``windowed8``: the window name (``brain``) or ``"C,W"`` the images were made with.
        hu_offset: ``hu16``: the value stored for 0 HU.
    """

    kind: ImageKind = "windowed8"
    window: str = "brain"
    hu_offset: float = 32768.0

    def hu_range(self) -> tuple[float, float] | None:
        """The HU interval an 8-bit image spans (None for ``hu16``)."""
        if self.kind != "windowed8":
            return None
        w = resolve_windows((self.window,))[0]
        return (w.center - w.width / 2, w.center + w.width / 2)

    def spec(self, spec: PreprocessSpec) -> PreprocessSpec:
        """``spec`` with this encoding's ``hu_range``."""
        return PreprocessSpec(size=spec.size, crop=spec.crop, margin=spec.margin,
                              version=spec.version, hu_range=self.hu_range())


def list_image_files(root: Path) -> list[Path]:
    """Image files under ``root`` (recursive, hidden skipped), sorted by relative path."""
    found = [
        Path(d) / n for d, _, names in os.walk(root) for n in names
        if not n.startswith(".") and Path(n).suffix.lower() in IMAGE_SUFFIXES
    ]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def skipped_image_files(root: Path) -> list[Path]:
    """Files under ``root`` that :func:`list_image_files` leaves out (reported, not ignored)."""
    return sorted(
        Path(d) / n for d, _, names in os.walk(root) for n in names
        if n.startswith(".") or Path(n).suffix.lower() not in IMAGE_SUFFIXES
    )


def read_image_hu(path: Path, encoding: ImageEncoding) -> np.ndarray:
    """float32 HU (H, W) of one image file.

    Raises:
        ImageReadError: unreadable file, colour image, or a bit depth other than declared.
    """
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ImageReadError(path, "cannot be decoded as an image (truncated or not an image)")
    if img.ndim == 3:
        if img.shape[2] == 4:
            img = img[:, :, :3]
        if not (np.array_equal(img[:, :, 0], img[:, :, 1])
                and np.array_equal(img[:, :, 0], img[:, :, 2])):
            raise ImageReadError(path, "colour image: expected grey values of one window")
        img = img[:, :, 0]
    if encoding.kind == "windowed8":
        if img.dtype != np.uint8:
            raise ImageReadError(path, f"{img.dtype} pixels, but --images windowed8 declares "
                                 "8-bit windowed images (use --images hu16 for 16-bit HU)")
        lo, hi = encoding.hu_range() or (0.0, 255.0)
        return (lo + img.astype(np.float32) * ((hi - lo) / 255.0)).astype(np.float32)
    if img.dtype not in (np.uint16, np.int16):
        raise ImageReadError(path, f"{img.dtype} pixels, but --images hu16 declares 16-bit "
                             "HU-encoded images (use --images windowed8 for 8-bit)")
    return img.astype(np.float32) - np.float32(encoding.hu_offset)


def image_meta(path: Path, shape: tuple[int, int], encoding: ImageEncoding) -> SliceMeta:
    """Catalog metadata of an image: the file name is its patient, study and series."""
    image_id = strip_extension(path.name)
    lo_hi = encoding.hu_range()
    return SliceMeta(
        path=str(path), sop_instance_uid=image_id, patient_id=image_id,
        study_instance_uid=image_id, series_instance_uid=image_id, modality="CT",
        instance_number=1, image_position_patient=None, image_orientation_patient=None,
        pixel_spacing=None, slice_thickness=None, rows=shape[0], columns=shape[1],
        bits_allocated=8 if lo_hi else 16, bits_stored=8 if lo_hi else 16,
        pixel_representation=0, photometric_interpretation="MONOCHROME2",
        rescale_slope=1.0, rescale_intercept=0.0 if lo_hi else -encoding.hu_offset,
        window_center=(lo_hi[0] + lo_hi[1]) / 2 if lo_hi else None,
        window_width=lo_hi[1] - lo_hi[0] if lo_hi else None,
        transfer_syntax_uid="image/" + path.suffix.lower().lstrip("."),
    )


def preprocess_image_files(
    paths: Sequence[Path], spec: PreprocessSpec, chunk: int, encoding: ImageEncoding,
    strict: bool = False, out: np.ndarray | None = None,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """:func:`ich.data.preprocess.preprocess_files` for image files (same block and rows)."""
    block = np.empty((len(paths), spec.size, spec.size), np.int16) if out is None else out
    rows: list[dict[str, Any]] = []
    n_ok = 0
    for path in paths:
        try:
            hu = read_image_hu(Path(path), encoding)
            block[n_ok] = preprocess_hu(hu, spec)
        except ImageReadError as exc:
            if strict:
                raise CacheError(str(exc)) from exc
            rows.append(error_row(Path(path), exc.reason, type(exc).__name__, None))
            rows[-1]["image_id"] = strip_extension(Path(path).name)
            continue
        row = flatten_meta(image_meta(Path(path), (hu.shape[0], hu.shape[1]), encoding))
        row.update(image_id=strip_extension(Path(path).name), path=str(path), status="ok",
                   error="", error_kind="", chunk=chunk, row=n_ok)
        rows.append(row)
        n_ok += 1
    return block[:n_ok], rows
