"""Fixtures that write DICOM variants (encodings, faults, broken files) into tmp dirs.

Every variant is built from an exact stored-value array, so tests can assert exact HU.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLosslessSV1,
    generate_uid,
)

from ich.dicom.io import SliceMeta

NATIVE = {
    "implicit": ImplicitVRLittleEndian,
    "explicit": ExplicitVRLittleEndian,
    "big": ExplicitVRBigEndian,
}


def ct_dataset(
    stored: np.ndarray,
    *,
    bits_allocated: int = 16,
    bits_stored: int = 16,
    pixel_representation: int = 1,
    slope: float = 1.0,
    intercept: float = -1024.0,
    syntax: str = ExplicitVRLittleEndian,
    **attrs: Any,
) -> Dataset:
    """A CT Image data set holding ``stored`` (rows × columns) as native pixel data.

    ``attrs`` set or override any element by keyword (``Modality="MR"``); a value of None
    deletes it.
    """
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientID = "P1"
    ds.StudyInstanceUID = "1.2.3.1"
    ds.SeriesInstanceUID = "1.2.3.1.1"
    ds.Modality = "CT"
    ds.InstanceNumber = 1
    ds.ImagePositionPatient = [-125.0, -120.5, 42.0]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.48828125, 0.48828125]
    ds.SliceThickness = 5.0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = pixel_representation
    ds.WindowCenter = "40"
    ds.WindowWidth = "80"
    ds.RescaleIntercept = f"{intercept:g}"
    ds.RescaleSlope = f"{slope:g}"
    kind = "i" if pixel_representation else "u"
    order = ">" if syntax == ExplicitVRBigEndian else "<"
    ds.PixelData = stored.astype(f"{order}{kind}{bits_allocated // 8}").tobytes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deliberately invalid values (ID_ UIDs) are the point
        for key, value in attrs.items():
            if value is None:
                if key in ds:
                    delattr(ds, key)
            else:
                setattr(ds, key, value)
    return ds


def write(ds: Dataset, path: Path) -> Path:
    """Write a DICOM Part 10 file (128-byte preamble, 'DICM', file meta)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(path, enforce_file_format=True)
    return path


def to_jpeg_lossless(src: Path, dst: Path) -> Path:
    """Re-encode ``src`` as JPEG Lossless SV1 with GDCM (pydicom has no encoder for it)."""
    import gdcm

    reader = gdcm.ImageReader()
    reader.SetFileName(str(src))
    assert reader.Read(), f"gdcm cannot read {src}"
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGLosslessProcess14_1))
    change.SetInput(reader.GetImage())
    assert change.Change(), "gdcm cannot encode JPEG Lossless"
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(dst))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    assert writer.Write(), f"gdcm cannot write {dst}"
    assert pydicom.dcmread(dst).file_meta.TransferSyntaxUID == JPEGLosslessSV1
    return dst


@pytest.fixture
def head_values() -> np.ndarray:
    """int16 stored values (64 × 48, non-square) spanning air, brain, blood and bone (+1024)."""
    rng = np.random.default_rng(3)
    hu = rng.integers(-1000, 1500, size=(64, 48))
    hu[:8] = -1000  # air rows
    hu[20:30, 10:30] = 35  # brain
    return (hu + 1024).astype(np.int16)


@pytest.fixture
def write_ct(tmp_path: Path) -> Callable[..., Path]:
    """``write_ct(name, stored, **ct_dataset_kwargs) -> Path`` of a Part 10 file in tmp_path."""

    def _write(name: str, stored: np.ndarray, **kwargs: Any) -> Path:
        return write(ct_dataset(stored, **kwargs), tmp_path / name)

    return _write


def make_meta(**overrides: Any) -> SliceMeta:
    """A SliceMeta of an axial slice with sane defaults; override any field."""
    fields: dict[str, Any] = dict(
        path="x.dcm", sop_instance_uid="1.1", patient_id="P1", study_instance_uid="ST1",
        series_instance_uid="SE1", modality="CT", instance_number=1,
        image_position_patient=(0.0, 0.0, 0.0), image_orientation_patient=(1, 0, 0, 0, 1, 0),
        pixel_spacing=(0.5, 0.5), slice_thickness=5.0, rows=512, columns=512,
        bits_allocated=16, bits_stored=16, pixel_representation=1,
        photometric_interpretation="MONOCHROME2", rescale_slope=1.0, rescale_intercept=-1024.0,
        window_center=40.0, window_width=80.0, transfer_syntax_uid=ExplicitVRLittleEndian,
    )
    fields.update(overrides)
    return SliceMeta(**fields)


@pytest.fixture
def meta_factory() -> Callable[..., SliceMeta]:
    """``meta_factory(**fields) -> SliceMeta`` (see :func:`make_meta`)."""
    return make_meta


@pytest.fixture
def dcm() -> SimpleNamespace:
    """The builders as one fixture: ``dcm.dataset``, ``dcm.write``, ``dcm.jpeg_lossless``."""
    return SimpleNamespace(dataset=ct_dataset, write=write, jpeg_lossless=to_jpeg_lossless)
