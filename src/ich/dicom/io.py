"""The only module that calls pydicom to read files: DICOM in, HU + typed metadata out.

First version: the happy path and the RSNA faults. Hardening (every malformed input mapped to a
named ``DicomReadError``) lives here too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from ich.dicom.windowing import to_hu
from ich.errors import DicomReadError, NoPixelDataError, NotDicomError, UnsupportedImageError


@dataclass(frozen=True)
class SliceMeta:
    """Header fields ich uses, with DICOM's own names (snake_case)."""

    path: str
    sop_instance_uid: str
    patient_id: str
    study_instance_uid: str
    series_instance_uid: str
    modality: str
    instance_number: int | None
    image_position_patient: tuple[float, float, float] | None
    image_orientation_patient: tuple[float, float, float, float, float, float] | None
    pixel_spacing: tuple[float, float] | None
    slice_thickness: float | None
    rows: int
    columns: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric_interpretation: str
    rescale_slope: float
    rescale_intercept: float
    window_center: float | None
    window_width: float | None
    transfer_syntax_uid: str
    wrap_fixed: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A flat dict (tuples kept) for tables and JSON."""
        return asdict(self)


@dataclass(frozen=True)
class Slice:
    """One CT slice: float32 HU (rows × columns) and its metadata."""

    hu: np.ndarray
    meta: SliceMeta


def _first(value: Any) -> Any:
    """First item of a multi-valued element (RSNA's ``['00036', '00036']``), else the value."""
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return value[0] if len(value) else None
    return value


def _float(value: Any) -> float | None:
    value = _first(value)
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _floats(value: Any, n: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n else None


def _meta_from_dataset(path: Path, ds: Dataset) -> SliceMeta:
    tsuid = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    instance = _float(ds.get("InstanceNumber"))
    return SliceMeta(
        path=str(path),
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        patient_id=str(ds.get("PatientID", "")),
        study_instance_uid=str(ds.get("StudyInstanceUID", "")),
        series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
        modality=str(ds.get("Modality", "")),
        instance_number=int(instance) if instance is not None else None,
        image_position_patient=_floats(ds.get("ImagePositionPatient"), 3),  # type: ignore[arg-type]
        image_orientation_patient=_floats(ds.get("ImageOrientationPatient"), 6),  # type: ignore[arg-type]
        pixel_spacing=_floats(ds.get("PixelSpacing"), 2),  # type: ignore[arg-type]
        slice_thickness=_float(ds.get("SliceThickness")),
        rows=int(ds.get("Rows", 0) or 0),
        columns=int(ds.get("Columns", 0) or 0),
        bits_allocated=int(ds.get("BitsAllocated", 16) or 16),
        bits_stored=int(ds.get("BitsStored", 16) or 16),
        pixel_representation=int(ds.get("PixelRepresentation", 0) or 0),
        photometric_interpretation=str(ds.get("PhotometricInterpretation", "")),
        rescale_slope=_float(ds.get("RescaleSlope")) or 1.0,
        rescale_intercept=_float(ds.get("RescaleIntercept")) or 0.0,
        window_center=_float(ds.get("WindowCenter")),
        window_width=_float(ds.get("WindowWidth")),
        transfer_syntax_uid=tsuid,
    )


def _dcmread(path: Path, stop_before_pixels: bool) -> Dataset:
    try:
        return pydicom.dcmread(path, force=True, stop_before_pixels=stop_before_pixels)
    except FileNotFoundError:
        raise NotDicomError(path, "file not found") from None
    except Exception as exc:
        raise NotDicomError(path, f"not a readable DICOM file ({type(exc).__name__}: {exc})") from exc


def read_meta(path: str | Path) -> SliceMeta:
    """Read only the header of a slice (fast: pixel data is not loaded)."""
    path = Path(path)
    return _meta_from_dataset(path, _dcmread(path, stop_before_pixels=True))


def read_slice(path: str | Path) -> Slice:
    """Read a CT slice as float32 Hounsfield units plus metadata.

    Raises:
        DicomReadError: (or a subclass) naming the file and the reason, for any input that
            cannot be turned into a trustworthy single-frame CT slice.
    """
    path = Path(path)
    ds = _dcmread(path, stop_before_pixels=False)
    meta = _meta_from_dataset(path, ds)
    if "PixelData" not in ds:
        raise NoPixelDataError(path, "no pixel data", "(7FE0,0010) Pixel Data")
    if meta.modality and meta.modality != "CT":
        raise UnsupportedImageError(path, f"modality is {meta.modality}, not CT", "(0008,0060) Modality")
    try:
        stored = ds.pixel_array
    except Exception as exc:
        raise DicomReadError(path, f"cannot decode pixel data ({exc})", "(7FE0,0010) Pixel Data") from exc
    if stored.ndim != 2:
        raise UnsupportedImageError(path, f"expected one 2-D frame, got shape {stored.shape}")
    hu, fixed = to_hu(
        stored, meta.rescale_slope, meta.rescale_intercept, meta.bits_stored, meta.pixel_representation
    )
    if fixed:
        meta = SliceMeta(**{**meta.to_dict(), "wrap_fixed": True, "rescale_intercept": -1000.0})
    return Slice(hu=np.ascontiguousarray(hu), meta=meta)
