"""The scoped DICOM input policy: pydicom's settings untouched, the Modality LUT never guessed."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pydicom
import pydicom.config
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian

from ich.dicom.io import read_meta, read_slice, read_stored, reading_policy
from ich.errors import ModalityLutError, UnsupportedImageError

# Prints pydicom.config's public plain settings as JSON, before and after using ich; run in a
# fresh interpreter so that nothing imported by pytest (or another test) hides a change.
_SNAPSHOT = r"""
import json, sys
import pydicom, pydicom.config as c

def snap():
    out = {k: repr(getattr(c, k)) for k in dir(c) if not k.startswith("_")
           and isinstance(getattr(c, k), (bool, int, float, str, type(None)))}
    for k in dir(c.settings):
        if not k.startswith("_") and not callable(getattr(c.settings, k)):
            out["settings." + k] = repr(getattr(c.settings, k))
    return out

before = snap()
import ich, ich.dicom.io, ich.data.build, ich.explore.scan  # noqa: E401
from ich.dicom.io import read_meta, read_slice
for path in sys.argv[1:]:
    read_slice(path)
    read_meta(path)
after = snap()
print(json.dumps({"before": before, "after": after}))
"""


def test_importing_and_reading_leaves_pydicom_config_unchanged(write_ct, head_values):
    # Big endian: the pydicom path (the pydicom-free header walk reads little endian only).
    paths = [write_ct("le.dcm", head_values),
             write_ct("be.dcm", head_values, syntax=ExplicitVRBigEndian)]
    out = subprocess.run([sys.executable, "-c", _SNAPSHOT, *map(str, paths)],
                         capture_output=True, text=True, check=True)
    snaps = json.loads(out.stdout)
    assert snaps["before"]["settings.reading_validation_mode"]  # the snapshot saw settings
    assert snaps["after"] == snaps["before"]


def _strict_file(write_ct, head_values, syntax: str) -> Path:
    """A file pydicom's strict reading refuses: RSNA-like UIDs and an over-long Latin-1 name."""
    return write_ct(f"strict_{syntax}.dcm", head_values, syntax=syntax,
                    SOPInstanceUID="ID_000039fa0", StudyInstanceUID="ID_5c8b5d701",
                    SpecificCharacterSet="ISO_IR 100", PatientID="Ü" * 70)


@pytest.mark.parametrize("syntax", [ExplicitVRBigEndian, ImplicitVRLittleEndian])
def test_ich_reads_beside_a_strict_pydicom_user(write_ct, head_values, syntax):
    """Another library's ``strict_reading()`` neither breaks ich's reads nor is undone by them."""
    path = _strict_file(write_ct, head_values, syntax)
    with pydicom.config.strict_reading():
        with pytest.raises(ValueError):  # the other user's pydicom really is strict
            _ = pydicom.dcmread(path).PatientID
        meta = read_meta(path)
        sl = read_slice(path)
        assert pydicom.config.settings.reading_validation_mode == pydicom.config.RAISE
    assert meta.patient_id == "Ü" * 70 == sl.meta.patient_id
    assert meta.sop_instance_uid == "ID_000039fa0"
    assert sl.hu.shape == head_values.shape


def test_reading_policy_is_scoped_and_survives_threads():
    settings = pydicom.config.settings
    start = settings.reading_validation_mode
    seen: list[int] = []
    barrier = threading.Barrier(4)

    def reader() -> None:
        with reading_policy():
            barrier.wait()  # all four inside at once: the nesting the counter must survive
            seen.append(settings.reading_validation_mode)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [pydicom.config.IGNORE] * 4
    assert settings.reading_validation_mode == start


def _lut_sequence() -> Sequence:
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.ModalityLUTType = "HU"
    item.LUTData = np.arange(4096, dtype="<u2").tobytes()
    return Sequence([item])


@pytest.mark.parametrize("syntax", [pydicom.uid.ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_modality_lut_sequence_is_refused(write_ct, head_values, syntax):
    path = write_ct("lut.dcm", head_values, syntax=syntax, ModalityLUTSequence=_lut_sequence(),
                    RescaleIntercept=None, RescaleSlope=None)
    for read in (read_slice, read_stored):
        with pytest.raises(ModalityLutError) as info:
            read(path)
        assert info.value.tag == "(0028,3000) Modality LUT Sequence"
        assert str(path) in str(info.value) and "Modality LUT Sequence" in info.value.reason
    assert read_meta(path).modality_lut_sequence  # the header says so without refusing


def test_modality_lut_sequence_beside_a_rescale_is_refused(write_ct, head_values):
    path = write_ct("both.dcm", head_values, ModalityLUTSequence=_lut_sequence())
    with pytest.raises(ModalityLutError, match="Modality LUT Sequence"):
        read_slice(path)


@pytest.mark.parametrize("syntax", [pydicom.uid.ExplicitVRLittleEndian, ExplicitVRBigEndian])
def test_missing_rescale_intercept_is_refused_not_zero(write_ct, head_values, syntax):
    path = write_ct("noint.dcm", head_values, syntax=syntax, RescaleIntercept=None)
    with pytest.raises(ModalityLutError) as info:
        read_slice(path)
    assert info.value.tag == "(0028,1052) Rescale Intercept"
    assert isinstance(info.value, UnsupportedImageError)  # batch jobs record it like the others
    meta = read_meta(path)
    assert meta.header_rescale_intercept is None and math.isnan(meta.rescale_intercept)
    assert not meta.wrap_fixed


def test_missing_rescale_slope_is_refused_not_one(write_ct, head_values):
    path = write_ct("noslope.dcm", head_values, RescaleSlope=None)
    with pytest.raises(ModalityLutError) as info:
        read_slice(path)
    assert info.value.tag == "(0028,1053) Rescale Slope"
    assert read_meta(path).header_rescale_slope is None


def test_complete_rescale_is_still_read(write_ct, head_values):
    sl = read_slice(write_ct("ok.dcm", head_values, slope=2.0, intercept=-1024.0))
    np.testing.assert_array_equal(sl.hu, head_values.astype(np.float32) * 2 - 1024)
    assert sl.meta.header_rescale_slope == 2.0 and not sl.meta.modality_lut_sequence


def test_real_sample_reads_under_strict_pydicom(rsna_sample: Path):
    """Every real RSNA slice (invalid ``ID_`` UIDs) reads while another user is strict."""
    files = sorted(rsna_sample.rglob("*.dcm"))
    assert files
    with pydicom.config.strict_reading():
        metas = [read_meta(f) for f in files[:20]]
        slices = [read_slice(f) for f in files[:5]]
        assert pydicom.config.settings.reading_validation_mode == pydicom.config.RAISE
    assert all(m.sop_instance_uid.startswith("ID_") for m in metas)
    assert all(m.header_rescale_intercept is not None and not m.modality_lut_sequence
               for m in metas)
    assert all(np.isfinite(s.hu).all() for s in slices)
