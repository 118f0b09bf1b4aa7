"""Write phantom slices as RSNA-like CT DICOM files (the one place in ich that writes DICOM).

The headers copy what the RSNA 2019 files look like, including their faults, so the readers
downstream are exercised on the same variety: ``ID_*`` identifiers in UID fields, 16-bit signed
and 12-bit unsigned storage, the 12-bit "wrap" fault (intercept > -100), multi-valued window
strings, Implicit and Explicit VR Little Endian, and InstanceNumber not always in slice order.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from ich.atomic import atomic_write_bytes
from ich.phantom.dicom_bytes import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    Element,
    encode_file,
    text,
    us,
)

#: How pixel values are stored: 16-bit signed, 12-bit unsigned, or 12-bit with the wrap fault.
Storage = Literal["int16", "uint12", "uint12_wrap"]

#: HU range each storage can hold (intercept -1024; the wrap fault decodes to [-1000, 3095]).
HU_RANGE: dict[str, tuple[float, float]] = {
    "int16": (-3024.0, 3071.0),
    "uint12": (-1024.0, 3071.0),
    "uint12_wrap": (-1000.0, 3095.0),
}


@dataclass(frozen=True)
class SliceHeader:
    """Header values of one phantom slice, with DICOM's own names."""

    sop_instance_uid: str
    patient_id: str
    study_instance_uid: str
    series_instance_uid: str
    instance_number: int
    image_position_patient: tuple[float, float, float]
    image_orientation_patient: tuple[float, float, float, float, float, float]
    pixel_spacing: float
    slice_thickness: float
    storage: Storage
    explicit_vr: bool
    multi_valued_window: bool


def encode_hu(hu: np.ndarray, storage: Storage) -> tuple[np.ndarray, float]:
    """HU (float) -> (stored values, (0028,1052) Rescale Intercept) for ``storage``.

    The wrap fault stores ``HU mod 4096`` with intercept 1, as the faulty RSNA files do, so a
    naive ``stored + intercept`` shows bright air while ``ich.dicom.windowing.to_hu`` (add 1000,
    wrap at 4096, intercept -1000) recovers the HU exactly.
    """
    low, high = HU_RANGE[storage]
    # One float buffer, worked in place: integers below 2**24 are exact even in float32, so
    # clipping, the offset and the modulo give the same integers as int32 arithmetic would.
    hu = np.asarray(hu)
    values = np.rint(hu.astype(np.promote_types(hu.dtype, np.float32), copy=False))
    np.clip(values, low, high, out=values)
    if storage == "int16":
        values += 1024.0
        return values.astype("<i2"), -1024.0
    if storage == "uint12":
        values += 1024.0
        return values.astype("<u2"), -1024.0
    np.mod(values, 4096.0, out=values)
    return values.astype("<u2"), 1.0


def _window_value(value: int, multi: bool) -> str | list[str]:
    """(0028,1050)/(0028,1051) as RSNA writes them: ``'30'`` or ``['00036', '00036']``."""
    return [f"{value:05d}", f"{value:05d}"] if multi else str(value)


def build_dataset(hu: np.ndarray, header: SliceHeader) -> Dataset:
    """A complete CT Image Storage dataset for one slice (nothing is written).

    The readable reference for :func:`encode_slice`, which writes the same bytes faster; a
    change here must be made there too (the tests compare the two).
    """
    stored, intercept = encode_hu(hu, header.storage)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = UID(header.sop_instance_uid)
    explicit = header.explicit_vr
    meta.TransferSyntaxUID = ExplicitVRLittleEndian if explicit else ImplicitVRLittleEndian
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = header.sop_instance_uid
    ds.Modality = "CT"
    ds.PatientID = header.patient_id
    ds.StudyInstanceUID = header.study_instance_uid
    ds.SeriesInstanceUID = header.series_instance_uid
    ds.StudyID = ""
    ds.InstanceNumber = header.instance_number
    ds.ImagePositionPatient = [f"{x:.6f}" for x in header.image_position_patient]
    ds.ImageOrientationPatient = [f"{x:.6f}" for x in header.image_orientation_patient]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(hu.shape[0]), int(hu.shape[1])
    ds.PixelSpacing = [f"{header.pixel_spacing:.6f}"] * 2
    ds.SliceThickness = f"{header.slice_thickness:.6f}"
    ds.BitsAllocated = 16
    ds.BitsStored = 16 if header.storage == "int16" else 12
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if header.storage == "int16" else 0
    ds.WindowCenter = _window_value(36 if header.multi_valued_window else 30,
                                    header.multi_valued_window)
    ds.WindowWidth = _window_value(80, header.multi_valued_window)
    ds.RescaleIntercept = f"{intercept:g}"
    ds.RescaleSlope = "1"
    ds.PixelData = stored.tobytes()
    return ds


def encode_slice(hu: np.ndarray, header: SliceHeader) -> bytes:
    """The Part 10 file of one slice, byte-identical to ``build_dataset`` saved by pydicom.

    Encoded directly (:mod:`ich.phantom.dicom_bytes`): pydicom's element-by-element writer
    cost a third of the phantom's time.
    """
    stored, intercept = encode_hu(hu, header.storage)
    signed = header.storage == "int16"
    bits = 16 if signed else 12
    multi = header.multi_valued_window
    elements: list[Element] = [
        (0x0008, 0x0016, "UI", text(CTImageStorage, "UI")),  # SOP Class UID
        (0x0008, 0x0018, "UI", text(header.sop_instance_uid, "UI")),
        (0x0008, 0x0060, "CS", text("CT", "CS")),  # Modality
        (0x0010, 0x0020, "LO", text(header.patient_id, "LO")),
        (0x0018, 0x0050, "DS", text(f"{header.slice_thickness:.6f}", "DS")),
        (0x0020, 0x000D, "UI", text(header.study_instance_uid, "UI")),
        (0x0020, 0x000E, "UI", text(header.series_instance_uid, "UI")),
        (0x0020, 0x0010, "SH", b""),  # Study ID: Type 2, empty
        (0x0020, 0x0013, "IS", text(str(header.instance_number), "IS")),
        (0x0020, 0x0032, "DS", text([f"{x:.6f}" for x in header.image_position_patient], "DS")),
        (0x0020, 0x0037, "DS",
         text([f"{x:.6f}" for x in header.image_orientation_patient], "DS")),
        (0x0028, 0x0002, "US", us(1)),  # Samples per Pixel
        (0x0028, 0x0004, "CS", text("MONOCHROME2", "CS")),
        (0x0028, 0x0010, "US", us(int(hu.shape[0]))),  # Rows
        (0x0028, 0x0011, "US", us(int(hu.shape[1]))),  # Columns
        (0x0028, 0x0030, "DS", text([f"{header.pixel_spacing:.6f}"] * 2, "DS")),
        (0x0028, 0x0100, "US", us(16)),  # Bits Allocated
        (0x0028, 0x0101, "US", us(bits)),  # Bits Stored
        (0x0028, 0x0102, "US", us(bits - 1)),  # High Bit
        (0x0028, 0x0103, "US", us(int(signed))),  # Pixel Representation
        (0x0028, 0x1050, "DS", text(_window_value(36 if multi else 30, multi), "DS")),
        (0x0028, 0x1051, "DS", text(_window_value(80, multi), "DS")),
        (0x0028, 0x1052, "DS", text(f"{intercept:g}", "DS")),
        (0x0028, 0x1053, "DS", text("1", "DS")),  # Rescale Slope
        (0x7FE0, 0x0010, "OW", stored.tobytes()),  # Pixel Data: 2 bytes a pixel, even
    ]
    return encode_file(header.sop_instance_uid, elements, header.explicit_vr)


def write_slice(path: Path, hu: np.ndarray, header: SliceHeader) -> Path:
    """Write one slice to ``path`` atomically (temporary file in the same folder, then rename).

    An interrupted run therefore never leaves a half-written ``.dcm`` that a reader would have
    to reject later.
    """
    return atomic_write_bytes(path, encode_slice(hu, header))


def write_slice_pydicom(path: Path, hu: np.ndarray, header: SliceHeader) -> Path:
    """:func:`write_slice` through pydicom (``build_dataset`` + ``dcmwrite``): the reference,
    kept for the tests and the benchmark's side-by-side floor."""
    with warnings.catch_warnings():
        # RSNA puts "ID_..." strings in UI elements; pydicom rightly warns, we mean it.
        warnings.simplefilter("ignore", UserWarning)
        ds = build_dataset(hu, header)
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
    return atomic_write_bytes(path, buffer.getvalue())
