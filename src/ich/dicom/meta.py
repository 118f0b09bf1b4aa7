"""Typed metadata of a CT slice, built from raw header values, and its plausibility checks.

Pure Python: no file access and no pydicom parsing, so the same rules apply whichever way a
header was read (see ``ich.dicom.io``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.multival import MultiValue

from ich.dicom.windowing import needs_wrap_fix
from ich.errors import ModalityLutError, UnsupportedImageError

#: Plausible image sizes for a CT slice (rows and columns).
MIN_SIZE, MAX_SIZE = 32, 4096


@dataclass(frozen=True)
class SliceMeta:
    """Header fields ich uses, with DICOM's own names (snake_case).

    ``rescale_intercept`` is the one HU are computed with: where the RSNA 12-bit wrap fault
    applies (``wrap_fixed``) it is -1000 and ``header_rescale_intercept`` keeps the value the
    file holds, so ``read_meta`` and ``read_slice`` describe a file identically.

    The Modality LUT transform (PS3.3 C.11.1) is never guessed: a missing (0028,1052) Rescale
    Intercept leaves ``header_rescale_intercept`` None and ``rescale_intercept`` NaN (a missing
    (0028,1053) Rescale Slope leaves ``header_rescale_slope`` None and ``rescale_slope`` NaN),
    and ``modality_lut_sequence`` says whether a (0028,3000) Modality LUT Sequence is present;
    :func:`check_image` refuses all three, so no HU are ever computed from them.
    """

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
    header_rescale_intercept: float | None = None
    samples_per_pixel: int = 1
    number_of_frames: int = 1
    window_center_vm: int = 1
    header_rescale_slope: float | None = 1.0
    modality_lut_sequence: bool = False

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
    if isinstance(value, (list, tuple, MultiValue)):
        return value[0] if len(value) else None
    return value


def _float(value: Any) -> float | None:
    value = _first(value)
    if value is None or value == "":
        return None
    try:
        out = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return out if math.isfinite(out) else None


def _vm(value: Any) -> int:
    """Value multiplicity of an element as read (0 when absent): RSNA's multi-valued window
    strings are a header variant worth counting."""
    if value is None or value == "":
        return 0
    return len(value) if isinstance(value, (list, tuple, MultiValue)) else 1


def _int(value: Any, default: int) -> int:
    out = _float(value)
    return int(out) if out is not None else default


def _floats(value: Any, n: int) -> tuple[float, ...] | None:
    if value is None or isinstance(value, (str, bytes)):
        return None
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError, OverflowError):
        return None
    return out if len(out) == n and all(math.isfinite(v) for v in out) else None


def build_meta(path: Path, get: Callable[[str], Any], transfer_syntax_uid: str) -> SliceMeta:
    """SliceMeta from ``get(keyword) -> value | None``.

    Why a getter: ``ich.dicom.io`` reads headers two ways (pydicom, or the pydicom-free walk of
    :mod:`ich.dicom.native`) and both must give the same SliceMeta. Values may be raw strings
    (``"00036"``), lists of them (multi-valued) or numbers; anything unparsable becomes None or
    the DICOM default. Where the RSNA 12-bit wrap fault applies, ``rescale_intercept`` is the
    corrected -1000 and ``wrap_fixed`` is set.
    """

    def text(keyword: str) -> str:
        value = _first(get(keyword))
        return "" if value is None else str(value).strip()

    bits_allocated = _int(get("BitsAllocated"), 16)
    bits_stored = _int(get("BitsStored"), bits_allocated)
    pixel_representation = _int(get("PixelRepresentation"), 0)
    slope = _float(get("RescaleSlope"))
    instance = _float(get("InstanceNumber"))
    # The wrap-fault decision is made before construction: one frozen dataclass per slice,
    # not a second one from dataclasses.replace (which ``ich prepare`` pays 750k times).
    header_intercept = _float(get("RescaleIntercept"))
    fixed = header_intercept is not None and needs_wrap_fix(
        bits_stored, pixel_representation, header_intercept)
    intercept = math.nan if header_intercept is None else header_intercept  # refused later
    if fixed:
        intercept = -1000.0
    return SliceMeta(
        path=str(path),
        sop_instance_uid=text("SOPInstanceUID"),
        patient_id=text("PatientID"),
        study_instance_uid=text("StudyInstanceUID"),
        series_instance_uid=text("SeriesInstanceUID"),
        modality=text("Modality"),
        instance_number=None if instance is None else int(instance),
        image_position_patient=_floats(get("ImagePositionPatient"), 3),  # type: ignore[arg-type]
        image_orientation_patient=_floats(get("ImageOrientationPatient"), 6),  # type: ignore[arg-type]
        pixel_spacing=_floats(get("PixelSpacing"), 2),  # type: ignore[arg-type]
        slice_thickness=_float(get("SliceThickness")),
        rows=_int(get("Rows"), 0),
        columns=_int(get("Columns"), 0),
        bits_allocated=bits_allocated,
        bits_stored=bits_stored,
        pixel_representation=pixel_representation,
        photometric_interpretation=text("PhotometricInterpretation"),
        rescale_slope=math.nan if slope is None else slope,
        rescale_intercept=intercept,
        window_center=_float(get("WindowCenter")),
        window_width=_float(get("WindowWidth")),
        transfer_syntax_uid=transfer_syntax_uid,
        wrap_fixed=fixed,
        header_rescale_intercept=header_intercept,
        samples_per_pixel=_int(get("SamplesPerPixel"), 1),
        number_of_frames=_int(get("NumberOfFrames"), 1),
        window_center_vm=_vm(get("WindowCenter")),
        header_rescale_slope=slope,
        modality_lut_sequence=bool(get("ModalityLUTSequence")),
    )


def check_image(path: Path, meta: SliceMeta) -> None:
    """Refuse what is valid DICOM but not a single-frame CT slice ich can trust.

    Raises:
        UnsupportedImageError: naming the file, the reason and the tag (modality, colour,
            multi-frame, implausible size or bit depth, non-greyscale, zero slope).
    """
    def refuse(reason: str, tag: str) -> UnsupportedImageError:
        return UnsupportedImageError(path, reason, tag)

    if meta.modality and meta.modality != "CT":
        raise refuse(f"modality is {meta.modality!r}, not CT", "(0008,0060) Modality")
    if meta.samples_per_pixel != 1:
        raise refuse(f"{meta.samples_per_pixel} samples per pixel (colour), CT needs 1",
                     "(0028,0002) Samples per Pixel")
    if meta.number_of_frames != 1:
        raise refuse(f"multi-frame image ({meta.number_of_frames} frames), expected one slice",
                     "(0028,0008) Number of Frames")
    for name, value, tag in (("rows", meta.rows, "(0028,0010) Rows"),
                             ("columns", meta.columns, "(0028,0011) Columns")):
        if not MIN_SIZE <= value <= MAX_SIZE:
            raise refuse(f"implausible image size: {value} {name} "
                         f"(expected {MIN_SIZE}..{MAX_SIZE})", tag)
    if meta.bits_allocated not in (8, 16):
        raise refuse(f"BitsAllocated is {meta.bits_allocated}, expected 8 or 16",
                     "(0028,0100) Bits Allocated")
    if not 1 <= meta.bits_stored <= meta.bits_allocated:
        raise refuse(f"BitsStored {meta.bits_stored} does not fit BitsAllocated "
                     f"{meta.bits_allocated}", "(0028,0101) Bits Stored")
    if meta.pixel_representation not in (0, 1):
        raise refuse(f"PixelRepresentation is {meta.pixel_representation}, expected 0 or 1",
                     "(0028,0103) Pixel Representation")
    if meta.photometric_interpretation not in ("", "MONOCHROME1", "MONOCHROME2"):
        raise refuse(f"photometric interpretation {meta.photometric_interpretation!r} is not "
                     "greyscale", "(0028,0004) Photometric Interpretation")
    _check_modality_lut(path, meta)
    if meta.rescale_slope == 0:
        raise refuse("rescale slope is 0", "(0028,1053) Rescale Slope")


def _check_modality_lut(path: Path, meta: SliceMeta) -> None:
    """Refuse any Modality LUT transform (PS3.3 C.11.1) other than a complete linear rescale.

    Why refuse rather than apply a (0028,3000) Modality LUT Sequence: the CT Image Module
    (C.8.2.1) requires Rescale Slope/Intercept, the cache and the head crop rely on HU being
    linear in the stored values, and no CT in the RSNA set or the phantom uses a table. A missing
    intercept is refused, not read as 0: that would shift every HU by ~1000 without a word.

    Raises:
        ModalityLutError: naming the file, what is missing or present, and the tag.
    """
    if meta.modality_lut_sequence:
        raise ModalityLutError(
            path, "a Modality LUT Sequence maps stored values to HU; ich reads only the linear "
            "Rescale Slope/Intercept of the CT Image Module", "(0028,3000) Modality LUT Sequence")
    if meta.header_rescale_intercept is None:
        raise ModalityLutError(
            path, "no Rescale Intercept: HU cannot be computed (Type 1 in the CT Image Module; "
            "not assumed to be 0)", "(0028,1052) Rescale Intercept")
    if meta.header_rescale_slope is None:
        raise ModalityLutError(
            path, "no Rescale Slope: HU cannot be computed (Type 1 in the CT Image Module; "
            "not assumed to be 1)", "(0028,1053) Rescale Slope")
