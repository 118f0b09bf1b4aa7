"""Uncompressed DICOM without pydicom: a header walk and native pixel decoding.

Why: ``ich prepare`` reads every slice of a 750k-file data set, and pydicom's general-purpose
parser and element conversion cost more than the pixels themselves. Almost every CT file is a
Part 10 file in Implicit or Explicit VR Little Endian whose elements all have a defined length;
for those, :func:`parse_header` walks the elements with ``struct`` and keeps the few ich needs.
It returns None for anything else (no preamble, big endian, deflated, compressed, sequences of
undefined length, non-ASCII text, odd VRs), and ``ich.dicom.io`` then falls back to pydicom, so
the shortcut never changes a result, only its speed.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ich.errors import TruncatedPixelDataError, UnsupportedImageError

IMPLICIT_VR_LE = "1.2.840.10008.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
DEFLATED_VR_LE = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BE = "1.2.840.10008.1.2.2"
#: Transfer syntaxes whose pixel data are plain arrays (no codec needed).
NATIVE_SYNTAXES = frozenset({IMPLICIT_VR_LE, EXPLICIT_VR_LE, DEFLATED_VR_LE, EXPLICIT_VR_BE})

PIXEL_DATA = 0x7FE00010
PIXEL_TAG = "(7FE0,0010) Pixel Data"
_TRANSFER_SYNTAX = 0x00020010
_UNDEFINED = 0xFFFFFFFF
# VRs whose explicit-VR header has 2 reserved bytes and a 4-byte length (PS3.5 7.1.2).
LONG_VRS = frozenset({b"OB", b"OW", b"OD", b"OF", b"OL", b"OV", b"UN", b"SQ", b"UT", b"UC", b"UR"})
# Text VRs decoded from raw bytes (ASCII only; anything else goes through pydicom).
_TEXT_VRS = frozenset({None, "UI", "CS", "DS", "IS", "LO", "SH"})


class UndecodableError(ValueError):
    """A raw value that this module will not interpret (pydicom must)."""


def decode_value(vr: str | None, value: bytes, little_endian: bool, binary: bool) -> Any:
    """Decode one raw element value the way ich reads it.

    Args:
        vr: The explicit VR, or None for Implicit VR (the dictionary VR is then assumed).
        value: The raw value bytes.
        little_endian: Byte order of binary values.
        binary: True for the US attributes (Rows, Bits Stored, ...), False for text ones.

    Returns:
        An int for binary values; for text, a stripped ``str`` or, when multi-valued (``\\``),
        a list of stripped ``str``.

    Raises:
        UndecodableError: when the VR or bytes are not the simple case (pydicom decides then).
    """
    if binary:
        if vr in (None, "US") and len(value) == 2:
            return struct.unpack("<H" if little_endian else ">H", value)[0]
        raise UndecodableError(f"binary value with VR {vr} and {len(value)} bytes")
    if vr not in _TEXT_VRS or not value.isascii():
        raise UndecodableError(f"text value with VR {vr} or non-ASCII bytes")
    parts = value.decode("ascii").strip("\x00 ").split("\\")
    return parts[0].strip() if len(parts) == 1 else [p.strip() for p in parts]


@dataclass(frozen=True)
class RawHeader:
    """The elements ich asked for, from a simple uncompressed little-endian Part 10 file.

    Attributes:
        transfer_syntax_uid: (0002,0010), Implicit or Explicit VR Little Endian.
        values: Tag -> decoded value (see :func:`decode_value`) of each wanted element present.
        pixel_offset: Byte offset of the (7FE0,0010) value in the file.
        pixel_length: Its declared length in bytes (may exceed the file: truncation).
    """

    transfer_syntax_uid: str
    values: dict[int, Any]
    pixel_offset: int
    pixel_length: int


def element_header(
    data: bytes | mmap.mmap, pos: int, explicit: bool, little_endian: bool = True
) -> tuple[int, str | None, int, int] | None:
    """(tag, VR, value offset, length) of the element starting at ``pos``, or None past the end."""
    if pos + 8 > len(data):
        return None
    order = "<" if little_endian else ">"
    group, elem = struct.unpack_from(order + "HH", data, pos)
    tag = (group << 16) | elem
    if not explicit or group == 0xFFFE:  # items and delimiters never carry a VR
        return tag, None, pos + 8, struct.unpack_from(order + "I", data, pos + 4)[0]
    vr = data[pos + 4 : pos + 6]
    if vr in LONG_VRS:
        if pos + 12 > len(data):
            return None
        return tag, vr.decode(), pos + 12, struct.unpack_from(order + "I", data, pos + 8)[0]
    if not (vr.isalpha() and vr.isupper()):
        raise UndecodableError(f"no valid VR at offset {pos}")
    return tag, vr.decode(), pos + 8, struct.unpack_from(order + "H", data, pos + 6)[0]


_HH = struct.Struct("<HH")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")


def _walk(
    data: bytes | mmap.mmap, pos: int, explicit: bool, wanted: dict[int, bool], out: dict[int, Any],
    stop_after_group: int | None,
) -> tuple[int, tuple[int, int] | None]:
    """Walk defined-length elements from ``pos``; returns (end position, pixel (offset, len)).

    Why inline: this loop runs ~30 times per slice of ``ich prepare``; reading the header here
    with precompiled little-endian ``Struct`` objects (the same checks, in the same order, as
    :func:`element_header`) halves its cost, and only wanted values are sliced and decoded.
    """
    size = len(data)
    hh, u16, u32 = _HH.unpack_from, _U16.unpack_from, _U32.unpack_from
    while True:
        if pos + 8 > size:
            return pos, None
        group, elem = hh(data, pos)
        if stop_after_group is not None and group != stop_after_group:
            return pos, None  # checked before the VR: the next group may be Implicit VR
        vr: str | None = None
        if not explicit or group == 0xFFFE:  # items and delimiters never carry a VR
            vpos, length = pos + 8, u32(data, pos + 4)[0]
        else:
            raw_vr = data[pos + 4 : pos + 6]
            if raw_vr in LONG_VRS:
                if pos + 12 > size:
                    return pos, None
                vpos, length = pos + 12, u32(data, pos + 8)[0]
            elif raw_vr.isalpha() and raw_vr.isupper():
                vpos, length = pos + 8, u16(data, pos + 6)[0]
            else:
                raise UndecodableError(f"no valid VR at offset {pos}")
            vr = raw_vr.decode()
        tag = (group << 16) | elem
        if tag == PIXEL_DATA:
            if length == _UNDEFINED:
                raise UndecodableError("encapsulated pixel data")
            return pos, (vpos, length)
        if length == _UNDEFINED or vpos + length > size:
            raise UndecodableError("undefined length or element beyond the end of the file")
        if tag in wanted:
            out[tag] = decode_value(vr, data[vpos : vpos + length], True, wanted[tag])
        pos = vpos + length


def parse_header(data: bytes | mmap.mmap, wanted: dict[int, bool]) -> RawHeader | None:
    """Read the wanted elements of a simple Part 10 file, or None when pydicom is needed.

    Args:
        data: The whole file (bytes or a read-only memory map).
        wanted: Tag -> whether the value is binary (US) rather than text.
    """
    if len(data) < 132 or data[128:132] != b"DICM":
        return None
    try:
        meta: dict[int, Any] = {}
        pos, _ = _walk(data, 132, True, {_TRANSFER_SYNTAX: False}, meta, stop_after_group=0x0002)
        ts = meta.get(_TRANSFER_SYNTAX)
        if ts not in (IMPLICIT_VR_LE, EXPLICIT_VR_LE):
            return None
        values: dict[int, Any] = {}
        _, pixel = _walk(data, pos, ts == EXPLICIT_VR_LE, wanted, values, stop_after_group=None)
    except (UndecodableError, struct.error):
        return None
    if pixel is None:
        return None  # no (7FE0,0010): let pydicom say what is there instead
    return RawHeader(str(ts), values, pixel[0], pixel[1])


def decode_native(
    path: Path, raw: bytes | memoryview, rows: int, columns: int, bits_allocated: int,
    bits_stored: int, pixel_representation: int, big_endian: bool = False,
) -> np.ndarray:
    """Stored values from uncompressed pixel bytes, exactly as pydicom's ``pixel_array``.

    Unsigned values are masked to BitsStored (bits above it are not part of the value,
    PS3.5 8.1.1) and signed ones sign-extended from bit BitsStored-1.

    Raises:
        TruncatedPixelDataError: when ``raw`` is shorter than rows × columns × BitsAllocated/8
            (e.g. RSNA's ID_6431af929): never a silently wrong image.
        UnsupportedImageError: when a row or more is left over (Rows / Columns / Bits
            Allocated do not match the data, or undeclared frames).
    """
    itemsize = bits_allocated // 8
    count = rows * columns
    if len(raw) < count * itemsize:
        raise TruncatedPixelDataError(
            path,
            f"truncated pixel data: {len(raw)} bytes, but {rows}×{columns} pixels of "
            f"{bits_allocated} bits need {count * itemsize}",
            PIXEL_TAG,
        )
    if len(raw) >= (count + columns) * itemsize:  # a row or more left over: not padding
        raise UnsupportedImageError(
            path,
            f"pixel data has {len(raw)} bytes, more than {rows}×{columns} pixels of "
            f"{bits_allocated} bits need ({count * itemsize}): the header does not describe "
            "the data",
            PIXEL_TAG,
        )
    kind = "i" if pixel_representation else "u"
    dtype = np.dtype(f"{'>' if big_endian else '<'}{kind}{itemsize}")
    stored = np.frombuffer(raw, dtype=dtype, count=count).reshape(rows, columns)
    spare = bits_allocated - bits_stored
    if spare and pixel_representation:
        stored = (stored.astype(dtype.newbyteorder("="), copy=True) << spare) >> spare
    elif spare and int(stored.max()) >> bits_stored:
        # Only when a value has bits above BitsStored: reading the maximum costs a fifth of
        # the masking copy, and almost every 12-bit file has none.
        stored = stored & np.array((1 << bits_stored) - 1, dtype=dtype)
    return stored


def fix_wrap_fault(stored: np.ndarray) -> np.ndarray:
    """Undo the RSNA 12-bit wrap fault on stored values: ``(s + 1000) mod 4096`` (uint16).

    Done on the integers: exact, and the values ``ich.dicom.windowing.to_hu`` computes in
    float32; the slice's HU then use intercept -1000 (see ``SliceMeta.wrap_fixed``).
    """
    fixed = stored.astype(np.uint16) + np.uint16(1000)  # 12-bit values: no uint16 overflow
    fixed &= np.uint16(4095)
    return fixed


def native_byte_order(stored: np.ndarray) -> np.ndarray:
    """The array in the machine's byte order (OpenCV cannot read big-endian arrays)."""
    return stored if stored.dtype.isnative else stored.astype(stored.dtype.newbyteorder("="))
