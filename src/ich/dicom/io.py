"""The only module that calls pydicom to read files: DICOM in, HU + typed metadata out.

``read_slice`` is the hot path of ``ich prepare`` (750k files), so uncompressed little- and
big-endian pixel data are decoded with ``np.frombuffer`` straight from the file bytes, and the
header of a plain Part 10 little-endian file is walked by :mod:`ich.dicom.native` without
pydicom at all (pydicom parses everything else); compressed transfer syntaxes (RLE, JPEG
Lossless, JPEG-LS, JPEG 2000, ...) go through pydicom's pixel plugins. Either way the stored
values are the ones ``Dataset.pixel_array`` gives: unsigned values are masked to (0028,0101)
Bits Stored and signed ones sign-extended.

Anything that cannot become a trustworthy single-frame CT slice raises a named
:class:`~ich.errors.DicomReadError` subclass saying file, reason and tag; low-level exceptions
never escape.

Input policy, scoped: importing ich changes none of pydicom's global settings. While pydicom
parses a file for ich (and only then), :func:`reading_policy` sets pydicom's reading validation
to IGNORE, because RSNA's ``ID_...`` UIDs are not valid UIDs and must neither warn per file nor
fail under another library's ``strict_reading()``; the previous mode is restored afterwards.
"""

from __future__ import annotations

import importlib.util
import io
import mmap
import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pydicom.config
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder
from pydicom.uid import UID

from ich.dicom.meta import (
    MAX_SIZE,
    MIN_SIZE,
    Slice,
    SliceMeta,
    build_meta,
    check_image,
)
from ich.dicom.native import (
    DEFLATED_VR_LE,
    EXPLICIT_VR_BE,
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    NATIVE_SYNTAXES,
    PIXEL_DATA,
    PIXEL_TAG,
    RawHeader,
    UndecodableError,
    decode_native,
    decode_value,
    element_header,
    fix_wrap_fault,
    native_byte_order,
    parse_header,
)
from ich.errors import DicomReadError, NoPixelDataError, NotDicomError, UnsupportedImageError

__all__ = [
    "MAX_SIZE", "MIN_SIZE", "Slice", "SliceMeta", "open_stored", "read_meta", "read_slice",
    "read_stored", "reading_policy", "transfer_syntax_name",
]


# Header elements read for SliceMeta, by keyword -> tag; the US ones are binary.
_KEYWORDS = (
    "SOPInstanceUID", "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "Modality",
    "InstanceNumber", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
    "SliceThickness", "Rows", "Columns", "BitsAllocated", "BitsStored", "PixelRepresentation",
    "PhotometricInterpretation", "RescaleSlope", "RescaleIntercept", "WindowCenter",
    "WindowWidth", "SamplesPerPixel", "NumberOfFrames", "ModalityLUTSequence",
)
_TAGS: dict[str, int] = {kw: int(tag_for_keyword(kw) or 0) for kw in _KEYWORDS}
_US_KEYWORDS = frozenset(
    {"Rows", "Columns", "BitsAllocated", "BitsStored", "PixelRepresentation", "SamplesPerPixel"}
)
#: Tag -> binary? for :func:`ich.dicom.native.parse_header`.
_WANTED: dict[int, bool] = {tag: kw in _US_KEYWORDS for kw, tag in _TAGS.items()}
# Elements at least one of which any real image data set has (used to tell DICOM from junk).
_KEY_KEYWORDS = (
    "SOPInstanceUID", "SOPClassUID", "Rows", "PixelData", "Modality", "StudyInstanceUID",
)
#: Bytes read_meta reads first, hoping the whole header is in them (it then needs no pydicom).
_META_CHUNK = 1 << 16
_TS_TAG = "(0002,0010) Transfer Syntax UID"


_policy_lock = threading.Lock()
_policy_depth = 0
_policy_saved: int | None = None


@contextmanager
def reading_policy() -> Iterator[None]:
    """ich's scope for pydicom: reading validation IGNORE inside, the caller's mode outside.

    Why not ``pydicom.config.disable_value_validation()`` directly: that also switches off
    write validation, and nested uses from several reader threads would restore each other's
    saved mode in the wrong order and leave IGNORE behind. Here the first reader to enter saves
    the mode and the last to leave restores it (a counter under a lock). Other pydicom users in
    the process see IGNORE only while an ich read is under way.
    """
    global _policy_depth, _policy_saved
    settings = pydicom.config.settings
    with _policy_lock:
        if _policy_depth == 0:
            _policy_saved = settings.reading_validation_mode
            settings.reading_validation_mode = pydicom.config.IGNORE
        _policy_depth += 1
    try:
        yield
    finally:
        with _policy_lock:
            _policy_depth -= 1
            if _policy_depth == 0 and _policy_saved is not None:
                settings.reading_validation_mode = _policy_saved
                _policy_saved = None


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence pydicom's per-file warnings (damaged files become named errors instead).

    Why: a batch over 750k files must not print a warning per odd file; what matters is
    reported through the exceptions. (``catch_warnings`` is process-global; readers in
    threads may briefly see warnings filtered.)
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def transfer_syntax_name(uid: str) -> str:
    """A readable name for a transfer syntax UID (the UID itself when pydicom does not know it)."""
    name = UID(uid).name if uid else ""
    return name or uid or "unknown"


def _get(ds: Dataset, keyword: str) -> Any:
    """An element's value, or None when absent or malformed.

    Speed: pydicom converts each element through several layers (~10 µs each); the plain-ASCII
    strings and US numbers ich needs are decoded straight from the raw bytes by the same
    :func:`~ich.dicom.native.decode_value` the pydicom-free path uses, so both agree.
    """
    elem = ds.get_item(_TAGS[keyword])  # raw (unconverted) element: the point is speed
    if elem is None:
        return None
    if isinstance(elem, RawDataElement) and isinstance(elem.value, bytes):
        try:
            return decode_value(elem.VR, elem.value, elem.is_little_endian,
                                keyword in _US_KEYWORDS)
        except UndecodableError:
            pass
    try:
        with _quiet():
            return ds.get(keyword)
    except Exception:
        return None


def _transfer_syntax(ds: Dataset) -> str:
    """(0002,0010) from the file meta, else what pydicom found the data set to be encoded in."""
    uid = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "").strip()
    if uid:
        return uid
    implicit, little = getattr(ds, "original_encoding", (True, True))
    if not little:
        return EXPLICIT_VR_BE
    return IMPLICIT_VR_LE if implicit else EXPLICIT_VR_LE


def _with_preamble(data: bytes) -> bytes:
    """Put back the 128-byte preamble of a file that starts with its 'DICM' marker."""
    return bytes(128) + data if data[:4] == b"DICM" else data


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise NotDicomError(path, "file not found") from None
    except OSError as exc:
        raise NotDicomError(path, f"cannot read file ({exc.strerror or exc})") from exc
    if not data:
        raise NotDicomError(path, "empty file (0 bytes)")
    return _with_preamble(data)


@contextmanager
def _file_contents(path: Path) -> Iterator[bytes | mmap.mmap]:
    """The file's contents, memory-mapped where possible.

    Why: mapping avoids copying the 0.5 MB of a slice into a bytes object, which halves the
    time of :func:`read_slice`. (A file truncated by another process *while* it is mapped
    would crash the reader with SIGBUS; input folders are not written during a read.)
    """
    try:
        fp = path.open("rb")
    except FileNotFoundError:
        raise NotDicomError(path, "file not found") from None
    except OSError as exc:
        raise NotDicomError(path, f"cannot read file ({exc.strerror or exc})") from exc
    with fp:
        try:
            size = os.fstat(fp.fileno()).st_size
            mapped = mmap.mmap(fp.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        except (OSError, ValueError):  # not mappable (a pipe, a special file system)
            mapped = None
        if mapped is None:
            data = fp.read()
            if not data:
                raise NotDicomError(path, "empty file (0 bytes)")
            yield _with_preamble(data)
            return
    try:
        yield mapped
    finally:
        with suppress(BufferError):  # an array still views it (e.g. in a traceback): GC closes it
            mapped.close()


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
        with _quiet():
            ds = pydicom.dcmread(buffer, force=True, stop_before_pixels=stop_before_pixels)
    except Exception as exc:
        reason = f"not a readable DICOM file ({type(exc).__name__}: {exc})"
        raise NotDicomError(path, reason) from exc
    _check_is_dicom(path, data, ds)
    return ds, buffer.tell()


def _parse_meta(path: Path, ds: Dataset | RawHeader) -> SliceMeta:
    try:
        if isinstance(ds, RawHeader):
            values = ds.values
            return build_meta(path, lambda kw: values.get(_TAGS[kw]), ds.transfer_syntax_uid)
        return build_meta(path, lambda kw: _get(ds, kw), _transfer_syntax(ds))
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
            head = fp.read(_META_CHUNK)
            header = parse_header(head, _WANTED)
            if header is not None:  # plain Part 10 header within the first chunk
                return _parse_meta(path, header)
            with reading_policy():
                if head[:4] == b"DICM" or not head:
                    data = _read_bytes(path)
                    ds, _ = _parse(path, data, stop_before_pixels=True)
                    return _parse_meta(path, ds)
                fp.seek(0)
                try:
                    with _quiet():
                        ds = pydicom.dcmread(fp, force=True, stop_before_pixels=True)
                except Exception as exc:
                    raise NotDicomError(
                        path, f"not a readable DICOM file ({type(exc).__name__}: {exc})"
                    ) from exc
                _check_is_dicom(path, head, ds)
                return _parse_meta(path, ds)
    except FileNotFoundError:
        raise NotDicomError(path, "file not found") from None
    except OSError as exc:
        raise NotDicomError(path, f"cannot read file ({exc.strerror or exc})") from exc


def _native_pixels(path: Path, raw: bytes | memoryview, meta: SliceMeta) -> np.ndarray:
    return decode_native(path, raw, meta.rows, meta.columns, meta.bits_allocated,
                         meta.bits_stored, meta.pixel_representation,
                         big_endian=meta.transfer_syntax_uid == EXPLICIT_VR_BE)


#: Transfer syntax -> (module, how to get it) for codecs ich leaves to the user. 12-bit JPEG
#: (Process 4, older CT archives) is read only by libjpeg, whose licence (GPL-3.0) an
#: Apache-2.0 package cannot pull in; GDCM and Pillow read 8-bit JPEG only.
_OPTIONAL_CODECS = {
    "1.2.840.10008.1.2.4.51": (
        "libjpeg", "pip install pylibjpeg-libjpeg (GPL-3.0, so not installed with ich)"),
}


def _decode_compressed(path: Path, ds: Dataset, meta: SliceMeta) -> np.ndarray:
    """Stored values from encapsulated pixel data through pydicom's pixel plugins."""
    ts = meta.transfer_syntax_uid
    name = transfer_syntax_name(ts)
    label = f"{name} ({ts})" if name != ts else ts
    try:
        decoder = get_decoder(UID(ts))
    except Exception as exc:
        raise UnsupportedImageError(path, f"unsupported transfer syntax {label}", _TS_TAG) from exc
    if not decoder.is_available:
        raise UnsupportedImageError(
            path, f"no decoder installed for transfer syntax {label}", _TS_TAG
        )
    try:
        with _quiet():
            stored = ds.pixel_array
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # Rust codecs panic with a BaseException (pyo3 PanicException)
        missing = _OPTIONAL_CODECS.get(ts)
        if missing and importlib.util.find_spec(missing[0]) is None:
            raise UnsupportedImageError(
                path, f"{name} pixel data ({meta.bits_stored}-bit) needs a decoder ich does not "
                f"install: {missing[1]}", PIXEL_TAG) from exc
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
        try:
            element = element_header(data, pos, ts != IMPLICIT_VR_LE, ts != EXPLICIT_VR_BE)
        except UndecodableError:
            element = None
        if element is not None and element[0] == PIXEL_DATA and element[3] != 0xFFFFFFFF:
            _, _, offset, length = element
            return _native_pixels(path, memoryview(data)[offset : offset + length], meta)
    full, _ = _parse(path, data, stop_before_pixels=False)  # deflated, encapsulated, odd files
    if "PixelData" not in full:
        other = next((kw for kw in ("FloatPixelData", "DoubleFloatPixelData") if kw in full), None)
        if other:
            raise UnsupportedImageError(path, f"{other} is not supported, expected Pixel Data",
                                        PIXEL_TAG)
        raise NoPixelDataError(path, "no pixel data", PIXEL_TAG)
    if ts in NATIVE_SYNTAXES and not getattr(full["PixelData"], "is_undefined_length", False):
        return _native_pixels(path, full.PixelData, meta)
    return _decode_compressed(path, full, meta)


def _hu(stored: np.ndarray, meta: SliceMeta) -> np.ndarray:
    """float32 HU of wrap-fixed stored values; identical to ``to_hu`` (same float32 ops)."""
    hu = stored.astype(np.float32)  # astype + in-place ops: ~10x faster than ufunc casting
    if meta.rescale_slope != 1.0:
        hu *= np.float32(meta.rescale_slope)
    hu += np.float32(meta.rescale_intercept)
    return hu


def _stored(path: Path, contents: bytes | mmap.mmap, fast: bool) -> tuple[np.ndarray, SliceMeta]:
    """Decode a file's stored values (wrap fault fixed, native byte order) and metadata.

    ``fast=False`` forces the pydicom header path (tests compare). The array may view
    ``contents``: callers must copy it (or be done with it) before a mapping is closed.
    """
    header = parse_header(contents, _WANTED) if fast else None
    if header is not None:
        meta = _parse_meta(path, header)
        check_image(path, meta)
        end = header.pixel_offset + header.pixel_length
        stored = _native_pixels(path, memoryview(contents)[header.pixel_offset : end], meta)
    else:
        data = _with_preamble(bytes(contents))
        with reading_policy():
            ds, pos = _parse(path, data, stop_before_pixels=True)
            meta = _parse_meta(path, ds)
            check_image(path, meta)
            stored = _stored_values(path, data, ds, pos, meta)
    return native_byte_order(fix_wrap_fault(stored) if meta.wrap_fixed else stored), meta


def _slice(path: Path, contents: bytes | mmap.mmap, fast: bool) -> Slice:
    """Decode a file's contents into HU; they never view ``contents`` (``_hu`` copies)."""
    stored, meta = _stored(path, contents, fast)
    return Slice(hu=_hu(stored, meta), meta=meta)


@contextmanager
def _named_errors(path: Path) -> Iterator[None]:
    """Turn anything but a DicomReadError raised while decoding into one naming the file."""
    try:
        yield
    except DicomReadError:
        raise
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # anything pydicom, a codec or numpy throws on a bad file
        raise DicomReadError(path, f"cannot read pixel data ({type(exc).__name__}: {exc})",
                             PIXEL_TAG) from exc


@contextmanager
def open_stored(path: str | Path) -> Iterator[tuple[np.ndarray, SliceMeta]]:
    """:func:`read_stored` whose array may view the file mapping: valid inside the block only.

    Why: the cache resizes the stored integers straight from the mapped file; a copy would
    cost a pass over 0.5 MB per slice. Raises as :func:`read_slice` (errors raised inside the
    block pass through unchanged).
    """
    path = path if isinstance(path, Path) else Path(path)  # Path(Path) re-parses: per slice
    with _file_contents(path) as contents:
        with _named_errors(path):
            stored, meta = _stored(path, contents, fast=True)
        yield stored, meta


def read_stored(path: str | Path) -> tuple[np.ndarray, SliceMeta]:
    """Stored values (the stored dtype, native byte order, wrap fault undone) plus metadata.

    ``values × meta.rescale_slope + meta.rescale_intercept`` are exactly ``read_slice``'s HU
    (for wrap-fault files the values are ``(s + 1000) mod 4096`` and the intercept -1000).
    Why: HU are linear in the stored values, so crop and resize can run on the integers and
    only the small result be rescaled. Raises what :func:`read_slice` raises.
    """
    with open_stored(path) as (stored, meta):
        if not stored.flags.owndata:
            stored = np.array(stored)  # may view the mapping, which closes on return
        return stored, meta


def read_slice(path: str | Path) -> Slice:
    """Read a CT slice as float32 Hounsfield units plus metadata.

    HU = stored × (0028,1053) Rescale Slope + (0028,1052) Rescale Intercept, with the RSNA
    12-bit wrap fault fixed. MONOCHROME1 only changes display, so HU are never inverted.

    Raises:
        DicomReadError: (or a subclass) naming the file and the reason, for any input that
            cannot be turned into a trustworthy single-frame CT slice.
    """
    path = Path(path)
    with _file_contents(path) as contents, _named_errors(path):
        return _slice(path, contents, fast=True)
