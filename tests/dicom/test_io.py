"""read_slice / read_meta: exact HU for every supported encoding, named errors for the rest."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from ich.dicom.io import read_meta, read_slice, transfer_syntax_name
from ich.dicom.native import parse_header
from ich.dicom.series import order_series
from ich.errors import (
    DicomReadError,
    NoPixelDataError,
    NotDicomError,
    TruncatedPixelDataError,
    UnsupportedImageError,
)


def _hu(stored: np.ndarray, slope: float = 1.0, intercept: float = -1024.0) -> np.ndarray:
    return (stored.astype(np.float32) * np.float32(slope) + np.float32(intercept)).astype(
        np.float32
    )


@pytest.mark.parametrize(
    "syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian]
)
@pytest.mark.parametrize("signed", [0, 1])
def test_native_syntaxes_give_exact_hu(write_ct, head_values, syntax, signed):
    s = read_slice(write_ct("n.dcm", head_values, syntax=syntax, pixel_representation=signed))
    np.testing.assert_array_equal(s.hu, _hu(head_values))
    assert s.meta.transfer_syntax_uid == syntax


def test_16bit_signed_explicit_le(write_ct, head_values):
    s = read_slice(write_ct("a.dcm", head_values))
    assert s.hu.dtype == np.float32 and s.hu.shape == (64, 48)
    np.testing.assert_array_equal(s.hu, _hu(head_values))
    assert s.hu[0, 0] == -1000.0
    m = s.meta
    assert (m.rows, m.columns, m.bits_stored, m.pixel_representation) == (64, 48, 16, 1)
    assert m.image_position_patient == (-125.0, -120.5, 42.0)
    assert m.pixel_spacing == (0.48828125, 0.48828125) and m.slice_thickness == 5.0
    assert m.instance_number == 1 and m.modality == "CT" and not m.wrap_fixed


def test_12bit_unsigned_implicit_le(write_ct, head_values):
    stored = head_values.astype(np.uint16)
    path = write_ct("b.dcm", stored, bits_stored=12, pixel_representation=0,
                    syntax=ImplicitVRLittleEndian)
    s = read_slice(path)
    np.testing.assert_array_equal(s.hu, _hu(stored))
    assert s.meta.transfer_syntax_uid == ImplicitVRLittleEndian


@pytest.mark.parametrize("fast", [True, False])
def test_bits_above_bits_stored_are_not_part_of_the_value(write_ct, head_values, fast):
    # Some scanners keep overlay or junk bits above BitsStored (PS3.5 8.1.1: not the value).
    stored = head_values.astype(np.uint16)
    junk = stored | np.uint16(0xA000)
    junk[0, 0] = stored[0, 0]  # one clean pixel: the junk is found anywhere, not only at [0, 0]
    path = write_ct("j.dcm", junk, bits_stored=12, pixel_representation=0)
    if fast:
        np.testing.assert_array_equal(read_slice(path).hu, _hu(stored))
    else:
        from ich.dicom.io import _file_contents, _stored

        with _file_contents(path) as contents:
            values, _ = _stored(path, contents, fast=False)
            np.testing.assert_array_equal(values, stored)


def test_explicit_big_endian(write_ct, head_values):
    s = read_slice(write_ct("be.dcm", head_values, syntax=ExplicitVRBigEndian))
    np.testing.assert_array_equal(s.hu, _hu(head_values))
    assert s.meta.transfer_syntax_uid == ExplicitVRBigEndian


def test_12bit_wrap_fault_is_fixed(write_ct):
    true_hu = np.array([[-1000, 40, 80, 1500]] * 32 + [[-1000, -500, 0, 30]] * 32)
    true_hu = np.repeat(true_hu, 8, axis=1)  # 64 × 32
    stored = np.mod(true_hu, 4096).astype(np.uint16)  # the fault: -1000 HU stored as 3096
    path = write_ct("wrap.dcm", stored, bits_stored=12, pixel_representation=0, intercept=1.0)
    s = read_slice(path)
    np.testing.assert_array_equal(s.hu, true_hu.astype(np.float32))
    assert s.meta.wrap_fixed and s.meta.rescale_intercept == -1000.0
    assert s.meta.header_rescale_intercept == 1.0
    assert read_meta(path) == s.meta


@pytest.mark.parametrize("slope,intercept", [(2.0, -1024.0), (0.5, -1000.0), (1.5, 0.0)])
def test_rescale_slope(write_ct, head_values, slope, intercept):
    s = read_slice(write_ct("s.dcm", head_values, slope=slope, intercept=intercept))
    np.testing.assert_array_equal(s.hu, _hu(head_values, slope, intercept))
    assert s.meta.rescale_slope == slope


def test_multivalued_zero_padded_window(write_ct, head_values):
    path = write_ct("w.dcm", head_values, WindowCenter=["00036", "00036"],
                    WindowWidth=["00080", "00090"])
    m = read_meta(path)
    assert (m.window_center, m.window_width) == (36.0, 80.0)


def test_missing_window_and_geometry_is_tolerated(write_ct, head_values):
    path = write_ct("nogeo.dcm", head_values, WindowCenter=None, WindowWidth=None,
                    ImagePositionPatient=None, PixelSpacing=None, Modality=None)
    s = read_slice(path)
    assert s.meta.window_center is None and s.meta.image_position_patient is None
    assert s.meta.modality == "" and s.meta.pixel_spacing is None


def test_monochrome1_is_not_inverted(write_ct, head_values):
    s1 = read_slice(write_ct("m1.dcm", head_values, PhotometricInterpretation="MONOCHROME1"))
    s2 = read_slice(write_ct("m2.dcm", head_values))
    np.testing.assert_array_equal(s1.hu, s2.hu)
    assert s1.meta.photometric_interpretation == "MONOCHROME1"
    assert s1.hu[0, 0] == -1000.0  # air stays -1000 HU


def test_signed_12bit_is_sign_extended(write_ct):
    # -1000 written as 12-bit two's complement with the top 4 bits clear (0x0C18)
    stored = np.full((32, 32), 0x0C18, dtype=np.uint16)
    stored[0, 0] = 0x07FF
    path = write_ct("s12.dcm", stored.view(np.int16), bits_stored=12, intercept=0.0)
    s = read_slice(path)
    assert s.hu[1, 1] == -1000.0 and s.hu[0, 0] == 2047.0
    np.testing.assert_array_equal(s.hu, pydicom.dcmread(path).pixel_array.astype(np.float32))


def test_8bit_unsigned(write_ct):
    stored = np.arange(64 * 64, dtype=np.int64).reshape(64, 64) % 256
    path = write_ct("u8.dcm", stored, bits_allocated=8, bits_stored=8, pixel_representation=0,
                    intercept=-100.0)
    np.testing.assert_array_equal(read_slice(path).hu, stored.astype(np.float32) - 100)


@pytest.mark.parametrize("cut", [128, 132])
def test_missing_preamble(write_ct, head_values, tmp_path, cut):
    data = write_ct("full.dcm", head_values).read_bytes()
    path = tmp_path / "nopre.dcm"
    path.write_bytes(data[cut:])  # 128: 'DICM' first; 132: file meta group first
    s = read_slice(path)
    np.testing.assert_array_equal(s.hu, _hu(head_values))
    assert read_meta(path).rows == 64


def test_raw_data_set_without_file_meta(dcm, head_values, tmp_path):
    ds = dcm.dataset(head_values, syntax=ImplicitVRLittleEndian)
    path = tmp_path / "raw.dcm"
    del ds.file_meta
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(path, implicit_vr=True, little_endian=True)
    np.testing.assert_array_equal(read_slice(path).hu, _hu(head_values))


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless])
def test_compressed_lossless_is_exact(dcm, head_values, tmp_path, syntax):
    ds = dcm.dataset(head_values)
    ds.compress(syntax)
    s = read_slice(dcm.write(ds, tmp_path / "c.dcm"))
    np.testing.assert_array_equal(s.hu, _hu(head_values))
    assert s.meta.transfer_syntax_uid == syntax


def test_jpeg_lossless_sv1_is_exact(dcm, head_values, tmp_path):
    src = dcm.write(dcm.dataset(head_values), tmp_path / "src.dcm")
    s = read_slice(dcm.jpeg_lossless(src, tmp_path / "jll.dcm"))
    np.testing.assert_array_equal(s.hu, _hu(head_values))
    assert "JPEG Lossless" in transfer_syntax_name(s.meta.transfer_syntax_uid)


def test_no_validation_warnings_for_rsna_uids(dcm, head_values, tmp_path):
    path = dcm.write(dcm.dataset(head_values, SOPInstanceUID="ID_000039fa0",
                                 StudyInstanceUID="ID_d7fd39e49b"), tmp_path / "ID_1.dcm")
    code = f"from ich.dicom.io import read_slice; read_slice({str(path)!r})"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stderr == ""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert read_slice(path).meta.sop_instance_uid == "ID_000039fa0"
    assert not caught


# --- the pydicom-free header path gives exactly what the pydicom path gives ----------------

def _both_paths(path: Path) -> tuple:
    from ich.dicom import io as dio

    data = path.read_bytes()
    fast, slow = dio._slice(path, data, fast=True), dio._slice(path, data, fast=False)
    assert fast.meta == slow.meta
    np.testing.assert_array_equal(fast.hu, slow.hu)
    return fast, parse_header(data, dio._WANTED)


@pytest.mark.parametrize("syntax,fast", [(ImplicitVRLittleEndian, True),
                                         (ExplicitVRLittleEndian, True),
                                         (ExplicitVRBigEndian, False)])
def test_fast_header_path_agrees(write_ct, head_values, syntax, fast):
    path = write_ct("f.dcm", head_values, syntax=syntax, WindowCenter=["00036", "00036"],
                    bits_stored=12, pixel_representation=0, intercept=1.0)  # wrap fault too
    _, header = _both_paths(path)
    assert (header is not None) == fast
    assert read_meta(path) == read_slice(path).meta


def test_without_memory_mapping(write_ct, head_values, tmp_path, monkeypatch):
    import mmap

    def refuse(*args, **kwargs):
        raise OSError("mmap not supported here")

    path = write_ct("nomap.dcm", head_values)
    mapped = read_slice(path)
    monkeypatch.setattr(mmap, "mmap", refuse)
    np.testing.assert_array_equal(read_slice(path).hu, mapped.hu)
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    _raises(empty, NotDicomError, "empty")


@pytest.mark.parametrize("undefined", [False, True])
def test_sequences_in_header(dcm, head_values, tmp_path, undefined):
    item = pydicom.Dataset()
    item.ReferencedSOPInstanceUID = "1.2.3"
    ds = dcm.dataset(head_values)
    ds.ReferencedImageSequence = [item]
    ds["ReferencedImageSequence"].is_undefined_length = undefined
    s, header = _both_paths(dcm.write(ds, tmp_path / "sq.dcm"))
    assert (header is None) == undefined  # undefined length: pydicom walks it
    np.testing.assert_array_equal(s.hu, _hu(head_values))


def test_non_ascii_and_huge_header(dcm, head_values, tmp_path):
    ds = dcm.dataset(head_values, SpecificCharacterSet="ISO_IR 100", PatientID="Müller")
    ds.add_new(0x00091010, "OB", bytes(100_000))  # private blob: header > read_meta's chunk
    path = dcm.write(ds, tmp_path / "latin1.dcm")
    s, _ = _both_paths(path)
    assert s.meta.patient_id == "Müller" and read_meta(path) == s.meta


# --- named errors -------------------------------------------------------------------------

def _raises(path: Path, error: type[DicomReadError], words: str) -> DicomReadError:
    with pytest.raises(error) as info:
        read_slice(path)
    assert path.name in str(info.value) and words in str(info.value)
    return info.value


def test_truncated_pixel_element(dcm, head_values, tmp_path):
    ds = dcm.dataset(head_values)
    ds.PixelData = ds.PixelData[:-1000]
    err = _raises(dcm.write(ds, tmp_path / "ID_6431af929.dcm"), TruncatedPixelDataError,
                  "truncated")
    assert err.tag and "7FE0,0010" in err.tag


def test_pixel_data_longer_than_header_says(dcm, head_values, tmp_path):
    ds = dcm.dataset(head_values)
    ds.Rows = 60  # 4 rows of data left over: the header does not describe the data
    _raises(dcm.write(ds, tmp_path / "long.dcm"), UnsupportedImageError, "does not describe")
    ds = dcm.dataset(head_values)
    ds.PixelData += b"\x00\x00"  # a little trailing padding is tolerated
    np.testing.assert_array_equal(read_slice(dcm.write(ds, tmp_path / "pad.dcm")).hu,
                                  _hu(head_values))


def test_truncated_file(write_ct, head_values, tmp_path):
    data = write_ct("full.dcm", head_values).read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[:-777])
    _raises(path, TruncatedPixelDataError, "truncated")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.dcm"
    path.write_bytes(b"")
    _raises(path, NotDicomError, "empty")
    with pytest.raises(NotDicomError, match="empty"):
        read_meta(path)


@pytest.mark.parametrize("blob", [
    b"\x89PNG\r\n\x1a\n" + bytes(300),
    b"patient,label\nID_1,0\n" * 30,
    bytes(range(256)) * 4,
])
def test_not_dicom(tmp_path, blob):
    path = tmp_path / "fake.dcm"
    path.write_bytes(blob)
    _raises(path, NotDicomError, "not a")
    with pytest.raises(NotDicomError):
        read_meta(path)


def test_missing_file_and_directory(tmp_path):
    _raises(tmp_path / "nope.dcm", NotDicomError, "not found")
    with pytest.raises(NotDicomError, match="not found"):
        read_meta(tmp_path / "nope.dcm")
    with pytest.raises(NotDicomError):
        read_slice(tmp_path)


def test_no_pixel_data(dcm, head_values, tmp_path):
    ds = dcm.dataset(head_values)
    del ds.PixelData
    _raises(dcm.write(ds, tmp_path / "nopix.dcm"), NoPixelDataError, "no pixel data")


@pytest.mark.parametrize("attrs,words", [
    ({"Modality": "MR"}, "not CT"),
    ({"NumberOfFrames": 2}, "multi-frame"),
    ({"SamplesPerPixel": 3}, "samples per pixel"),
    ({"PhotometricInterpretation": "PALETTE COLOR"}, "greyscale"),
    ({"BitsStored": 17}, "BitsStored"),
    ({"RescaleSlope": "0"}, "slope"),
])
def test_unsupported_images(write_ct, head_values, attrs, words):
    _raises(write_ct("bad.dcm", head_values, **attrs), UnsupportedImageError, words)


def test_implausible_sizes(write_ct):
    _raises(write_ct("tiny.dcm", np.zeros((16, 16), np.int16)), UnsupportedImageError, "size")
    _raises(write_ct("b32.dcm", np.zeros((64, 64), np.int16), bits_allocated=32, bits_stored=32),
            UnsupportedImageError, "BitsAllocated")


def test_unsupported_transfer_syntax(dcm, head_values, tmp_path):
    ds = dcm.dataset(head_values)
    ds.compress(RLELossless)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no decoder
    err = _raises(dcm.write(ds, tmp_path / "mpeg.dcm"), UnsupportedImageError, "MPEG2")
    assert "transfer syntax" in str(err)


def test_private_transfer_syntax_is_named(dcm, head_values, tmp_path):
    ds = dcm.dataset(head_values)
    ds.file_meta.TransferSyntaxUID = "1.2.3.4.5"
    path = tmp_path / "private.dcm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(path, implicit_vr=False, little_endian=True, enforce_file_format=True)
    err = _raises(path, UnsupportedImageError, "unsupported transfer syntax 1.2.3.4.5")
    assert err.tag == "(0002,0010) Transfer Syntax UID"


def test_deflated_explicit_le(write_ct, head_values):
    path = write_ct("defl.dcm", head_values, syntax=DeflatedExplicitVRLittleEndian)
    np.testing.assert_array_equal(read_slice(path).hu, _hu(head_values))


def test_12bit_jpeg_without_its_codec_says_what_to_install(tmp_path):
    # A real 12-bit JPEG Extended file shipped with pydicom, relabelled as CT.
    import importlib.util

    from pydicom.data import get_testdata_file

    if importlib.util.find_spec("libjpeg") is not None:
        pytest.skip("pylibjpeg-libjpeg is installed here: the file is read")
    ds = pydicom.dcmread(get_testdata_file("JPGExtended.dcm"))
    ds.Modality, ds.RescaleSlope, ds.RescaleIntercept = "CT", 1, -1024
    path = tmp_path / "jpeg12.dcm"
    ds.save_as(path)
    with pytest.raises(UnsupportedImageError, match="pip install pylibjpeg-libjpeg") as info:
        read_slice(path)
    assert "jpeg12.dcm" in str(info.value) and "12-bit" in str(info.value)


def test_corrupt_compressed_stream(dcm, head_values, tmp_path):
    ds = dcm.dataset(head_values)
    ds.compress(JPEG2000Lossless)
    data = bytearray(ds.PixelData)
    data[40:-40] = bytes(len(data) - 80)  # keep the item tags, wipe the codestream
    ds.PixelData = bytes(data)
    _raises(dcm.write(ds, tmp_path / "corrupt.dcm"), DicomReadError, "corrupt.dcm")


def test_errors_are_ich_errors_not_low_level(tmp_path):
    from ich.errors import IchError

    for i, blob in enumerate([b"DICM", bytes(128) + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff"]):
        path = tmp_path / f"junk{i}.dcm"
        path.write_bytes(blob)
        with pytest.raises(IchError):
            read_slice(path)


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, RLELossless])
def test_damaged_files_raise_only_named_errors(dcm, head_values, tmp_path, syntax):
    ds = dcm.dataset(head_values)
    if syntax != ExplicitVRLittleEndian:
        ds.compress(syntax)
    original = dcm.write(ds, tmp_path / "orig.dcm").read_bytes()
    rng = np.random.default_rng(11)
    path = tmp_path / "damaged.dcm"
    for _ in range(150):
        data = bytearray(original)
        where = int(rng.integers(0, min(len(data), 1500)))
        if rng.random() < 0.3:
            data = data[: int(rng.integers(0, len(data)))]
        else:
            data[where : where + 4] = rng.integers(0, 256, 4, dtype=np.uint8).tobytes()
        path.write_bytes(bytes(data))
        for read in (read_slice, read_meta):
            try:
                read(path)
            except DicomReadError as exc:
                assert "damaged.dcm" in str(exc)


# --- the real RSNA sample ------------------------------------------------------------------

@pytest.mark.real
def test_real_sample_reads(rsna_sample):
    files = sorted(rsna_sample.glob("stage_2_*/*.dcm"))
    assert len(files) == 123
    slices = [read_slice(f) for f in files]
    bits = {(s.meta.bits_stored, s.meta.pixel_representation) for s in slices}
    assert {(12, 0), (16, 1)} <= bits
    for f, s in zip(files[:: 10], slices[:: 10], strict=False):
        ds = pydicom.dcmread(f)
        ref = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_array_equal(s.hu, ref.astype(np.float32))
    by_path = {s.meta.path: s for s in slices}
    for series in order_series([s.meta for s in slices]):
        middle = by_path[series.metas[len(series) // 2].path].hu
        in_view = middle[middle > -2000]  # 16-bit series pad outside the scan circle (-3024)
        assert abs(float(np.percentile(in_view, 10)) + 1000) < 30  # air ≈ -1000 HU
        brain = float(np.median(middle[220:292, 220:292]))
        assert 0 < brain < 80, (series.series_instance_uid, brain)  # centre of the head: brain
    assert all(read_meta(f) == s.meta for f, s in zip(files, slices, strict=True))


def _stored_hu(path):
    from ich.dicom.io import read_stored
    from ich.dicom.windowing import to_hu

    stored, meta = read_stored(path)
    assert stored.dtype.isnative
    hu, fixed = to_hu(stored, meta.rescale_slope, meta.rescale_intercept, meta.bits_stored,
                      meta.pixel_representation)
    assert not fixed  # the wrap fault is undone once, in read_stored
    return hu, meta


@pytest.mark.parametrize("case", [
    {}, {"syntax": ExplicitVRBigEndian}, {"syntax": ImplicitVRLittleEndian},
    {"slope": 2.0, "intercept": -1024.0}, {"slope": 0.5, "intercept": -1000.0},
    {"PhotometricInterpretation": "MONOCHROME1"},
    {"bits_stored": 12, "pixel_representation": 0},
])
def test_read_stored_gives_the_same_hu(write_ct, head_values, case):
    values = head_values.astype(np.uint16) if case.get("pixel_representation") == 0 else head_values
    path = write_ct("st.dcm", values, **case)
    hu, meta = _stored_hu(path)
    s = read_slice(path)
    np.testing.assert_array_equal(hu, s.hu)
    assert meta == s.meta


def test_read_stored_fixes_the_wrap_fault(write_ct):
    true_hu = np.repeat(np.array([[-1000, 40, 80, 1500]] * 64), 8, axis=1)
    stored = np.mod(true_hu, 4096).astype(np.uint16)
    path = write_ct("wrap.dcm", stored, bits_stored=12, pixel_representation=0, intercept=1.0)
    hu, meta = _stored_hu(path)
    np.testing.assert_array_equal(hu, true_hu.astype(np.float32))
    assert meta.wrap_fixed and meta.rescale_intercept == -1000.0


def test_read_stored_errors_match_read_slice(write_ct, head_values, tmp_path):
    from ich.dicom.io import read_stored

    data = write_ct("full.dcm", head_values).read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[:-777])
    with pytest.raises(TruncatedPixelDataError, match="truncated"):
        read_stored(path)
    with pytest.raises(NotDicomError, match="not found"):
        read_stored(tmp_path / "nope.dcm")
