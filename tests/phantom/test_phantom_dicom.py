"""Phantom DICOM files: read back with ich's reader, HU ranges, headers, the wrap fault."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from ich.dicom.io import read_meta, read_slice
from ich.dicom.windowing import to_hu
from ich.labels import SUBTYPES
from ich.phantom.dicom_writer import HU_RANGE, SliceHeader, encode_hu, write_slice
from ich.phantom.structures import grow


def _header(storage: str, explicit: bool = True) -> SliceHeader:
    return SliceHeader(
        sop_instance_uid="ID_0123456ab", patient_id="ID_01234567",
        study_instance_uid="ID_0123456789", series_instance_uid="ID_abcdef0123",
        instance_number=3, image_position_patient=(-125.0, -125.0, 40.0),
        image_orientation_patient=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0), pixel_spacing=0.488281,
        slice_thickness=5.0, storage=storage, explicit_vr=explicit,  # type: ignore[arg-type]
        multi_valued_window=not explicit,
    )


@pytest.mark.parametrize("storage", ["int16", "uint12", "uint12_wrap"])
def test_every_storage_decodes_to_the_intended_hu(tmp_path: Path, storage: str) -> None:
    rng = np.random.default_rng(0)
    low, high = HU_RANGE[storage]
    hu = rng.uniform(low - 200, high + 200, size=(40, 48)).astype(np.float32)
    hu[0, :4] = [-1000, 0, 40, 1500]
    path = write_slice(tmp_path / "ID_0123456ab.dcm", hu, _header(storage, storage == "int16"))
    got = read_slice(path)
    assert np.array_equal(got.hu, np.clip(np.rint(hu), low, high))
    assert got.meta.wrap_fixed == (storage == "uint12_wrap")
    stored, intercept = encode_hu(hu, storage)  # type: ignore[arg-type]
    if storage == "uint12_wrap":  # the fault: naive stored + intercept shows bright air
        assert intercept > -100 and stored[0, 0] + intercept > 3000
    signed = storage == "int16"
    again, _ = to_hu(stored, 1.0, intercept, 16 if signed else 12, int(signed))
    assert np.array_equal(again, got.hu)


def test_headers_look_like_rsna(tmp_path: Path) -> None:
    path = write_slice(tmp_path / "ID_0123456ab.dcm", np.zeros((8, 8), np.float32),
                       _header("uint12", explicit=False))
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ImplicitVRLittleEndian
    assert (ds.BitsStored, ds.PixelRepresentation, float(ds.RescaleIntercept)) == (12, 0, -1024)
    assert list(ds.WindowCenter) == ["00036", "00036"]
    meta = read_meta(path)
    assert meta.sop_instance_uid == "ID_0123456ab" and meta.modality == "CT"
    assert meta.window_center == 36.0 and meta.instance_number == 3


@pytest.fixture(scope="module")
def slices(tiny_cohort: Path) -> pd.DataFrame:
    patients = pd.read_csv(tiny_cohort / "patients.csv")
    rows = []
    for image_id in patients["image_id"]:
        s = read_slice(tiny_cohort / "images" / f"{image_id}.dcm")
        rows.append({"image_id": image_id, "slice": s})
    return patients.merge(pd.DataFrame(rows), on="image_id")


def test_hu_ranges_of_the_tissues(tiny_cohort: Path, slices: pd.DataFrame) -> None:
    assert len(slices) > 100
    blood = []
    for _, row in slices.iterrows():
        hu = row["slice"].hu
        size = hu.shape[0]
        beside = hu[size // 2 - 4 : size // 2 + 4, 2 : size // 16 + 2]  # left of the head
        assert abs(np.median(beside) + 1000) < 30  # air
        if 0.3 < row["slice_index"] / 44 < 0.6:
            assert hu.max() > 700  # skull
        mask_path = tiny_cohort / "masks" / f"{row['image_id']}.npz"
        if mask_path.exists():
            with np.load(mask_path) as npz:
                blood.extend(hu[npz[k].astype(bool)].tolist() for k in npz.files)
    middle = slices[slices["slice_index"] == 12]
    for s in middle["slice"]:
        hu = s.hu
        brain = hu[(hu > 0) & (hu < 60)]
        assert 20 <= np.median(brain) <= 45
    values = np.concatenate([np.asarray(b) for b in blood])
    assert 50 <= np.median(values) <= 90


def test_wrap_fault_files_are_present_and_decoded(slices: pd.DataFrame) -> None:
    faulty = [s for s in slices["slice"] if s.meta.wrap_fixed]
    assert faulty, "the tiny cohort should carry a few wrap-fault files"
    assert len(faulty) < 0.1 * len(slices)
    for s in faulty:
        assert s.hu.min() >= -1000 and np.median(s.hu) < -500


def test_head_outline_shrinks_toward_the_vertex(slices: pd.DataFrame) -> None:
    for _, series in slices.groupby("series_instance_uid"):
        metas = [s.meta for s in series["slice"]]
        ipp = np.array([m.image_position_patient for m in metas])
        iop = np.array(metas[0].image_orientation_patient)
        normal = np.cross(iop[:3], iop[3:])
        order = np.argsort(ipp @ normal)
        assert list(series["slice_index"].to_numpy()[order]) == list(range(len(series)))
        area = np.array([(s.hu > -300).sum() for s in series["slice"]])[order]
        n = len(area)
        assert area[-1] < 0.6 * area[n // 3]  # vertex much smaller than mid-head


def test_instance_numbers_and_encodings_vary(slices: pd.DataFrame) -> None:
    metas = [s.meta for s in slices["slice"]]
    assert {m.bits_stored for m in metas} == {12, 16}
    assert len({m.transfer_syntax_uid for m in metas}) == 2
    assert all(m.instance_number is not None for m in metas)
    assert set(SUBTYPES)  # labels module importable alongside


def test_written_masks_sit_where_their_subtype_belongs(tiny_cohort: Path,
                                                       slices: pd.DataFrame) -> None:
    by_id = dict(zip(slices["image_id"], slices["slice"], strict=True))
    seen: set[str] = set()
    for path in sorted((tiny_cohort / "masks").glob("*.npz")):
        hu = by_id[path.stem].hu
        bone = hu > 500
        with np.load(path) as npz:
            for name in npz.files:
                mask = npz[name].astype(bool)
                seen.add(name)
                assert not (mask & bone).any()
                if name in ("epidural", "subdural"):  # against the inner table
                    assert (grow(mask, 2) & bone).any(), path.name
                if name == "intraparenchymal":  # inside the brain, away from the skull
                    assert not (grow(mask, 1) & bone).any(), path.name
    assert {"subdural", "intraparenchymal"} <= seen
