"""CT DICOM headers and pixel storage of the independent phantom (see ``alt_phantom.py``).

Storage variants differ from RSNA's on purpose: unsigned 16-bit words holding 12 or 16 bits
with (0028,1052) Rescale Intercept -1024, or signed 16-bit with intercept 0; 512 px at
0.4-0.55 mm (or the same field of view at another size); gantry tilt in (0020,0037) Image
Orientation (Patient); Instance Numbers descending in some series; a padded reconstruction
circle; real UIDs derived from the seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from alt_anatomy import Patient
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from ich.atomic import atomic_path

#: (0028,0101) Bits Stored, (0028,0103) Pixel Representation, Rescale Intercept, padding HU.
STORAGE = {"u16-12": (12, 0, -1024.0, -1024.0), "u16-16": (16, 0, -1024.0, -1024.0),
           "i16": (16, 1, 0.0, -2000.0)}


def _stored(hu: np.ndarray, patient: Patient) -> np.ndarray:
    """HU -> stored integers of the series' storage variant (padded outside the FOV circle)."""
    bits, signed, intercept, pad = STORAGE[patient.header["storage"]]
    values = np.rint(hu - intercept)
    if patient.header["pad"]:
        rr = np.hypot(patient.xi, patient.yi)
        values[rr > patient.header["fov"] / 2] = pad - intercept
    if signed:
        return np.clip(values, -32768, 32767).astype(np.int16)
    return np.clip(values, 0, 2**bits - 1).astype(np.uint16)


def write_slice(path: Path, patient: Patient, k: int, hu: np.ndarray) -> None:
    """Write slice ``k`` of the patient's series as a CT Image Storage file, atomically."""
    h = patient.header
    bits, signed, intercept, _ = STORAGE[h["storage"]]
    tilt = np.deg2rad(h["tilt"])
    row = np.array([1.0, 0.0, 0.0])
    col = np.array([0.0, np.cos(tilt), -np.sin(tilt)])
    normal = np.cross(row, col)
    z = float(patient.slice_z[k])
    half = h["fov"] / 2
    position = -half * row - half * col + z * normal
    n = len(patient.slice_z)
    entropy = [f"alt-{h['seed']}-{h['index']}"]

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[*entropy, f"slice-{k}"])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.PatientID = patient.patient_id
    ds.PatientName = ""
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyDate = ""
    ds.StudyTime = ""
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = ""
    ds.Manufacturer = "ALT-PHANTOM"
    ds.StudyInstanceUID = patient.study_uid
    ds.SeriesInstanceUID = patient.series_uid
    ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[*entropy, "frame"])
    ds.SeriesNumber = 2
    ds.AcquisitionNumber = 1
    ds.PatientPosition = "HFS"
    ds.Laterality = ""
    ds.PositionReferenceIndicator = ""
    ds.InstanceNumber = n - k if h["descending"] else k + 1
    ds.ImagePositionPatient = [round(float(v), 4) for v in position]
    ds.ImageOrientationPatient = [round(float(v), 6) for v in (*row, *col)]
    ds.SliceLocation = round(z, 3)
    ds.SliceThickness = patient.thickness
    ds.PixelSpacing = [round(patient.spacing, 6)] * 2
    ds.KVP = 120
    ds.GantryDetectorTilt = round(h["tilt"], 2)
    ds.ConvolutionKernel = h["kernel"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = patient.size
    ds.BitsAllocated = 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = signed
    ds.RescaleIntercept = intercept
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    if h["multi_window"]:
        ds.WindowCenter, ds.WindowWidth = [40, 600], [80, 2800]
    else:
        ds.WindowCenter, ds.WindowWidth = 40, 80
    ds.PixelData = _stored(hu, patient).tobytes()
    with atomic_path(path, suffix=".dcm") as tmp:
        ds.save_as(tmp, enforce_file_format=True)
