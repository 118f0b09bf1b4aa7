"""The only module that calls pydicom to read files: DICOM in, HU + typed metadata out.

``read_slice`` is the hot path of ``ich prepare`` (750k files), so uncompressed little- and
big-endian pixel data are decoded here with ``np.frombuffer`` straight from the file bytes
(pydicom only parses the header); compressed transfer syntaxes (RLE, JPEG Lossless, JPEG-LS,
JPEG 2000, ...) go through pydicom's pixel plugins. Either way the stored values are the same
ones ``Dataset.pixel_array`` gives: unsigned values are masked to (0028,0101) Bits Stored and
signed ones sign-extended.

Anything that cannot become a trustworthy single-frame CT slice raises a named
:class:`~ich.errors.DicomReadError` subclass saying file, reason and tag; low-level exceptions
never escape. pydicom's validation warnings (RSNA's ``ID_...`` UIDs are not valid UIDs) are
switched off once, at import.
"""

from __future__ import annotations

import io
import math
import struct
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pydicom.config
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder
from pydicom.tag import BaseTag
from pydicom.uid import UID

from ich.dicom.windowing import needs_wrap_fix, to_hu
from ich.errors import (
    DicomReadError,
    NoPixelDataError,
    NotDicomError,
    TruncatedPixelDataError,
    UnsupportedImageError,
)

# RSNA's UIDs look like "ID_000039fa0": tolerated on input, never warned about per file.
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE

IMPLICIT_VR_LE = "1.2.840.10008.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
DEFLATED_VR_LE = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BE = "1.2.840.10008.1.2.2"
#: Transfer syntaxes whose pixel data are plain arrays (no codec needed).
NATIVE_SYNTAXES = frozenset({IMPLICIT_VR_LE, EXPLICIT_VR_LE, DEFLATED_VR_LE, EXPLICIT_VR_BE})
#: Plausible image sizes for a CT slice (rows and columns).
MIN_SIZE, MAX_SIZE = 32, 4096

PIXEL_TAG = "(7FE0,0010) Pixel Data"
_TS_TAG = "(0002,0010) Transfer Syntax UID"
# Elements at least one of which any real image data set has (used to tell DICOM from junk).
_KEY_KEYWORDS = (
    "SOPInstanceUID", "SOPClassUID", "Rows", "PixelData", "Modality", "StudyInstanceUID",
)
# Header elements read for SliceMeta, by keyword -> tag; the US ones are binary.
_KEYWORDS = (
    "SOPInstanceUID", "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "Modality",
    "InstanceNumber", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
    "SliceThickness", "Rows", "Columns", "BitsAllocated", "BitsStored", "PixelRepresentation",
    "PhotometricInterpretation", "RescaleSlope", "RescaleIntercept", "WindowCenter",
    "WindowWidth", "SamplesPerPixel", "NumberOfFrames",
)
_TAGS: dict[str, int] = {kw: int(tag_for_keyword(kw) or 0) for kw in _KEYWORDS}
_US_KEYWORDS = frozenset(
    {"Rows", "Columns", "BitsAllocated", "BitsStored", "PixelRepresentation", "SamplesPerPixel"}
)
# VRs whose explicit-VR header has 2 reserved bytes and a 4-byte length.
_LONG_VRS = frozenset({b"OB", b"OW", b"OD", b"OF", b"OL", b"OV", b"UN", b"SQ", b"UT", b"UC", b"UR"})


@dataclass(frozen=True)
class SliceMeta:
    """Header fields ich uses, with DICOM's own names (snake_case).

    ``rescale_intercept`` is the one HU are computed with: where the RSNA 12-bit wrap fault
    applies (``wrap_fixed``) it is -1000 and ``header_rescale_intercept`` keeps the value the
    file holds, so ``read_meta`` and ``read_slice`` describe a file identically.
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

    def to_dict(self) -> dict[str, Any]:
        """A flat dict (tuples kept) for tables and JSON."""
        return asdict(self)


@dataclass(frozen=True)
class Slice:
    """One CT slice: float32 HU (rows × columns) and its metadata."""

    hu: np.ndarray
    meta: SliceMeta


def transfer_syntax_name(uid: str) -> str:
    """A readable name for a transfer syntax UID (the UID itself when pydicom does not know it)."""
    name = UID(uid).name if uid else ""
    return name or uid or "unknown"


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
        out = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return out if math.isfinite(out) else None


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


def _get(ds: Dataset, keyword: str) -> Any:
    """An element's value, or None when absent or malformed.

    Speed: pydicom converts each element through several layers (~10 µs each), which is half
    the cost of a slice; the plain-ASCII strings and US numbers ich needs are decoded here
    straight from the raw bytes, and everything else falls back to ``ds.get``.
    """
    tag = _TAGS[keyword]
    elem = ds._dict.get(BaseTag(tag))  # raw (unconverted) element: the point is speed
    if elem is None:
        return None
    if isinstance(elem, RawDataElement) and isinstance(elem.value, bytes):
        value = elem.value
        if keyword in _US_KEYWORDS:
            if elem.VR in (None, "US") and len(value) == 2:
                return struct.unpack("<H" if elem.is_little_endian else ">H", value)[0]
        elif elem.VR in (None, "UI", "CS", "DS", "IS", "LO", "SH") and value.isascii():
            parts = value.decode("ascii").strip("\x00 ").split("\\")
            return parts[0].strip() if len(parts) == 1 else [p.strip() for p in parts]
    try:
        return ds.get(keyword)
    except Exception:
        return None


def _str(ds: Dataset, keyword: str) -> str:
    value = _first(_get(ds, keyword))
    return "" if value is None else str(value).strip()


def _transfer_syntax(ds: Dataset) -> str:
    """(0002,0010) from the file meta, else what pydicom found the data set to be encoded in."""
    uid = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "").strip()
    if uid:
        return uid
    implicit, little = getattr(ds, "original_encoding", (True, True))
    if not little:
        return EXPLICIT_VR_BE
    return IMPLICIT_VR_LE if implicit else EXPLICIT_VR_LE


def _meta_from_dataset(path: Path, ds: Dataset) -> SliceMeta:
    bits_allocated = _int(_get(ds, "BitsAllocated"), 16)
    slope = _float(_get(ds, "RescaleSlope"))
    instance = _float(_get(ds, "InstanceNumber"))
    meta = SliceMeta(
        path=str(path),
        sop_instance_uid=_str(ds, "SOPInstanceUID"),
        patient_id=_str(ds, "PatientID"),
        study_instance_uid=_str(ds, "StudyInstanceUID"),
        series_instance_uid=_str(ds, "SeriesInstanceUID"),
        modality=_str(ds, "Modality"),
        instance_number=None if instance is None else int(instance),
        image_position_patient=_floats(_get(ds, "ImagePositionPatient"), 3),  # type: ignore[arg-type]
        image_orientation_patient=_floats(_get(ds, "ImageOrientationPatient"), 6),  # type: ignore[arg-type]
        pixel_spacing=_floats(_get(ds, "PixelSpacing"), 2),  # type: ignore[arg-type]
        slice_thickness=_float(_get(ds, "SliceThickness")),
        rows=_int(_get(ds, "Rows"), 0),
        columns=_int(_get(ds, "Columns"), 0),
        bits_allocated=bits_allocated,
        bits_stored=_int(_get(ds, "BitsStored"), bits_allocated),
        pixel_representation=_int(_get(ds, "PixelRepresentation"), 0),
        photometric_interpretation=_str(ds, "PhotometricInterpretation"),
        rescale_slope=1.0 if slope is None else slope,
        rescale_intercept=_float(_get(ds, "RescaleIntercept")) or 0.0,
        window_center=_float(_get(ds, "WindowCenter")),
        window_width=_float(_get(ds, "WindowWidth")),
        transfer_syntax_uid=_transfer_syntax(ds),
        samples_per_pixel=_int(_get(ds, "SamplesPerPixel"), 1),
        number_of_frames=_int(_get(ds, "NumberOfFrames"), 1),
    )
    header_intercept = meta.rescale_intercept
    fixed = needs_wrap_fix(meta.bits_stored, meta.pixel_representation, header_intercept)
    return replace(
        meta,
        wrap_fixed=fixed,
        rescale_intercept=-1000.0 if fixed else header_intercept,
        header_rescale_intercept=header_intercept,
    )


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise NotDicomError(path, "file not found") from None
    except OSError as exc:
        raise NotDicomError(path, f"cannot read file ({exc.strerror or exc})") from exc
    if not data:
        raise NotDicomError(path, "empty file (0 bytes)")
    if data[:4] == b"DICM":  # 'DICM' marker without the 128-byte preamble before it
        data = bytes(128) + data
    return data


def _check_is_dicom(path: Path, data: bytes, ds: Dataset) -> None:
    """Reject junk that ``force=True`` parsed into nonsense elements (a PNG, a text file)."""
    if data[128:132] == b"DICM":
        return
    tags = list(ds.keys())
    meta = getattr(ds, "file_meta", None)
    tags += list(meta.keys()) if meta is not None else []
    if tags and min(t.group for t in tags) <= 0x0028 and any(kw in ds for kw in _KEY_KEYWORDS):
        return
    raise NotDicomError(
        path, "not a DICOM file (no 'DICM' marker and no recognisable DICOM elements)"
    )


def _parse(path: Path, data: bytes, stop_before_pixels: bool) -> tuple[Dataset, int]:
    """Parse the data set; returns it and the offset where parsing stopped."""
    buffer = io.BytesIO(data)
    try:
        ds = pydicom.dcmread(buffer, force=True, stop_before_pixels=stop_before_pixels)
    except Exception as exc:
        reason = f"not a readable DICOM file ({type(exc).__name__}: {exc})"
        raise NotDicomError(path, reason) from exc
    _check_is_dicom(path, data, ds)
    return ds, buffer.tell()


def _parse_meta(path: Path, ds: Dataset) -> SliceMeta:
    try:
        return _meta_from_dataset(path, ds)
    except Exception as exc:  # a malformed header must still give a named error
        raise NotDicomError(path, f"unreadable header ({type(exc).__name__}: {exc})") from exc


def read_meta(path: str | Path) -> SliceMeta:
    """Read only the header of a slice (pixel data are neither loaded nor checked).

    Raises:
        NotDicomError: if the file is missing, empty or not DICOM.
    """
    path = Path(path)
    try:
        with path.open("rb") as fp:
            head = fp.read(132)
            if head[:4] == b"DICM" or not head:
                data = _read_bytes(path)
                ds, _ = _parse(path, data, stop_before_pixels=True)
                return _parse_meta(path, ds)
            fp.seek(0)
            try:
                ds = pydicom.dcmread(fp, force=True, stop_before_pixels=True)
            except Exception as exc:
                raise NotDicomError(
                    path, f"not a readable DICOM file ({type(exc).__name__}: {exc})"
                ) from exc
    except FileNotFoundError:
        raise NotDicomError(path, "file not found") from None
    except OSError as exc:
        raise NotDicomError(path, f"cannot read file ({exc.strerror or exc})") from exc
    _check_is_dicom(path, head, ds)
    return _parse_meta(path, ds)


def _check_image(path: Path, meta: SliceMeta) -> None:
    """Refuse what is valid DICOM but not a single-frame CT slice ich can trust."""
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
    if meta.rescale_slope == 0:
        raise refuse("rescale slope is 0", "(0028,1053) Rescale Slope")


def _pixel_element(data: bytes, pos: int, ts: str) -> tuple[int, int] | None:
    """(value offset, length) of the (7FE0,0010) element starting at ``pos``, if it is there.

    Length 0xFFFFFFFF means encapsulated (compressed) data.
    """
    order = ">" if ts == EXPLICIT_VR_BE else "<"
    header = data[pos : pos + 12]
    if len(header) < 8 or struct.unpack(order + "HH", header[:4]) != (0x7FE0, 0x0010):
        return None
    if ts == IMPLICIT_VR_LE:
        return pos + 8, struct.unpack(order + "I", header[4:8])[0]
    if header[4:6] in _LONG_VRS and len(header) == 12:
        return pos + 12, struct.unpack(order + "I", header[8:12])[0]
    return pos + 8, struct.unpack(order + "H", header[6:8])[0]


def _decode_native(path: Path, raw: bytes | memoryview, meta: SliceMeta) -> np.ndarray:
    """Stored values from uncompressed pixel bytes, as ``pixel_array`` gives them."""
    itemsize = meta.bits_allocated // 8
    count = meta.rows * meta.columns
    if len(raw) < count * itemsize:
        raise TruncatedPixelDataError(
            path,
            f"truncated pixel data: {len(raw)} bytes, but {meta.rows}×{meta.columns} pixels of "
            f"{meta.bits_allocated} bits need {count * itemsize}",
            PIXEL_TAG,
        )
    kind = "i" if meta.pixel_representation else "u"
    order = ">" if meta.transfer_syntax_uid == EXPLICIT_VR_BE else "<"
    stored = np.frombuffer(raw, dtype=f"{order}{kind}{itemsize}", count=count)
    stored = stored.reshape(meta.rows, meta.columns)
    spare = meta.bits_allocated - meta.bits_stored
    if spare and meta.pixel_representation:  # sign-extend from bit BitsStored-1
        stored = (stored.astype(stored.dtype.newbyteorder("="), copy=True) << spare) >> spare
    elif spare:  # bits above BitsStored are not part of the value (PS3.5 8.1.1)
        stored = stored & np.array((1 << meta.bits_stored) - 1, dtype=stored.dtype)
    return stored


def _decode_compressed(path: Path, ds: Dataset, meta: SliceMeta) -> np.ndarray:
    """Stored values from encapsulated pixel data through pydicom's pixel plugins."""
    ts = meta.transfer_syntax_uid
    name = transfer_syntax_name(ts)
    try:
        decoder = get_decoder(UID(ts))
    except Exception as exc:
        reason = f"unsupported transfer syntax {name} ({ts})"
        raise UnsupportedImageError(path, reason, _TS_TAG) from exc
    if not decoder.is_available:
        raise UnsupportedImageError(
            path, f"no decoder installed for transfer syntax {name} ({ts})", _TS_TAG
        )
    try:
        stored = ds.pixel_array
    except Exception as exc:
        raise DicomReadError(
            path, f"cannot decode {name} pixel data ({type(exc).__name__}: {exc})", PIXEL_TAG
        ) from exc
    if stored.shape != (meta.rows, meta.columns):
        raise UnsupportedImageError(
            path, f"decoded pixel data has shape {stored.shape}, expected "
            f"({meta.rows}, {meta.columns})", PIXEL_TAG)
    return stored


def _stored_values(path: Path, data: bytes, ds: Dataset, pos: int, meta: SliceMeta) -> np.ndarray:
    """Find and decode the pixel data: straight from ``data`` when possible, else via pydicom."""
    ts = meta.transfer_syntax_uid
    if ts in NATIVE_SYNTAXES and ts != DEFLATED_VR_LE:
        element = _pixel_element(data, pos, ts)
        if element is not None and element[1] != 0xFFFFFFFF:
            offset, length = element
            return _decode_native(path, memoryview(data)[offset : offset + length], meta)
    full, _ = _parse(path, data, stop_before_pixels=False)  # deflated, encapsulated, odd files
    if "PixelData" not in full:
        other = next((kw for kw in ("FloatPixelData", "DoubleFloatPixelData") if kw in full), None)
        if other:
            raise UnsupportedImageError(path, f"{other} is not supported, expected Pixel Data",
                                        PIXEL_TAG)
        raise NoPixelDataError(path, "no pixel data", PIXEL_TAG)
    if ts in NATIVE_SYNTAXES and not getattr(full["PixelData"], "is_undefined_length", False):
        return _decode_native(path, full.PixelData, meta)
    return _decode_compressed(path, full, meta)


def _hu(stored: np.ndarray, meta: SliceMeta) -> np.ndarray:
    """float32 HU in as few passes as possible; identical to ``to_hu`` (same float32 ops)."""
    if meta.wrap_fixed:
        hu, _ = to_hu(stored, meta.rescale_slope, meta.header_rescale_intercept or 0.0,
                      meta.bits_stored, meta.pixel_representation)
        return hu
    if meta.rescale_slope == 1.0:
        hu = stored.astype(np.float32)
    else:
        hu = np.multiply(stored, np.float32(meta.rescale_slope), dtype=np.float32)
    hu += np.float32(meta.rescale_intercept)
    return hu


def read_slice(path: str | Path) -> Slice:
    """Read a CT slice as float32 Hounsfield units plus metadata.

    HU = stored × (0028,1053) Rescale Slope + (0028,1052) Rescale Intercept, with the RSNA
    12-bit wrap fault fixed. MONOCHROME1 only changes display, so HU are never inverted.

    Raises:
        DicomReadError: (or a subclass) naming the file and the reason, for any input that
            cannot be turned into a trustworthy single-frame CT slice.
    """
    path = Path(path)
    data = _read_bytes(path)
    ds, pos = _parse(path, data, stop_before_pixels=True)
    meta = _parse_meta(path, ds)
    _check_image(path, meta)
    try:
        stored = _stored_values(path, data, ds, pos, meta)
        hu = _hu(stored, meta)
    except DicomReadError:
        raise
    except Exception as exc:  # anything pydicom or numpy throws on a malformed file
        raise DicomReadError(path, f"cannot read pixel data ({type(exc).__name__}: {exc})",
                             PIXEL_TAG) from exc
    return Slice(hu=hu, meta=meta)
