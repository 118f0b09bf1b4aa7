"""The independent phantom (benchmarks/alt_phantom.py): valid CT DICOM that ``ich prepare``
accepts with its labels, every subtype over a small cohort, deterministic per seed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.uid import UID

from ich.cli import main as ich_main
from ich.data.cache import SliceCache

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from alt_phantom import LABELS, generate

SUBTYPES = LABELS[1:]


@pytest.fixture(scope="module")
def alt_cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("alt") / "cohort"
    return out, generate(out, studies=8, seed=0, size=128)


@pytest.mark.slow
def test_labels_cover_every_subtype_with_rsna_like_prevalence(
    alt_cohort: tuple[Path, pd.DataFrame],
) -> None:
    out, frame = alt_cohort
    for name in SUBTYPES:
        assert frame[name].sum() > 0, name
    assert (frame["any"] == frame[list(SUBTYPES)].max(axis=1)).all()
    study_any = frame.groupby("study")["any"].max()
    assert 0.2 <= study_any.mean() <= 0.6  # ~40 % of studies bleed
    assert 0.03 <= frame["any"].mean() <= 0.35
    long = pd.read_csv(out / "labels.csv")
    assert list(long.columns) == ["ID", "Label"]
    assert len(long) == 6 * len(frame)
    assert set(long["Label"]) <= {0, 1}


@pytest.mark.slow
def test_headers_are_valid_ct(alt_cohort: tuple[Path, pd.DataFrame]) -> None:
    out, frame = alt_cohort
    seen_storage, orders = set(), set()
    for study, group in frame.groupby("study"):
        first = pydicom.dcmread(out / "images" / f"{group['image_id'].iloc[0]}.dcm")
        last = pydicom.dcmread(out / "images" / f"{group['image_id'].iloc[-1]}.dcm")
        assert first.Modality == "CT"
        assert first.StudyInstanceUID == study
        for uid in (first.StudyInstanceUID, first.SeriesInstanceUID, first.SOPInstanceUID):
            assert UID(uid).is_valid
        assert first.Rows == first.Columns == 128
        assert 0.4 * 4 <= float(first.PixelSpacing[0]) <= 0.55 * 4  # 512-px spacing x 4
        assert 2.5 <= float(first.SliceThickness) <= 5
        iop = np.asarray(first.ImageOrientationPatient, float)
        normal = np.cross(iop[:3], iop[3:])
        # slices written bottom to top: the position along the normal grows
        assert np.dot(last.ImagePositionPatient, normal) > np.dot(first.ImagePositionPatient,
                                                                   normal)
        orders.add(int(last.InstanceNumber) > int(first.InstanceNumber))
        seen_storage.add((int(first.PixelRepresentation), float(first.RescaleIntercept)))
        hu = first.pixel_array * float(first.RescaleSlope) + float(first.RescaleIntercept)
        assert hu.min() < -500 and hu.max() > 700  # air and bone
    assert len(seen_storage) >= 2  # signed and unsigned storage both occur
    if shutil.which("dciodvfy"):  # dicom3tools: the CT Image IOD's required attributes
        path = out / "images" / f"{frame['image_id'].iloc[0]}.dcm"
        report = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
        assert "Error" not in report.stdout + report.stderr


@pytest.mark.slow
def test_ich_prepare_accepts_it_with_labels(alt_cohort: tuple[Path, pd.DataFrame],
                                            tmp_path: Path) -> None:
    out, frame = alt_cohort
    cache_dir = tmp_path / "cache"
    rc = ich_main(["prepare", str(out / "images"), "--labels", str(out / "labels.csv"),
                   "--out", str(cache_dir), "--size", "64", "--workers", "1", "--quiet"])
    assert rc in (0, None)
    cache = SliceCache(cache_dir)
    assert (cache.catalog["status"] == "ok").all()
    assert len(cache.catalog) == len(frame)
    truth = frame.set_index("image_id").loc[cache.catalog["image_id"], list(LABELS)]
    np.testing.assert_array_equal(cache.labels, truth.to_numpy())
    assert cache.catalog["series_instance_uid"].nunique() == frame["series"].nunique()


def test_deterministic_per_seed(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", studies=2, seed=5, size=48)
    b = generate(tmp_path / "b", studies=2, seed=5, size=48)
    c = generate(tmp_path / "c", studies=2, seed=6, size=48)
    pd.testing.assert_frame_equal(a, b)
    assert (tmp_path / "a" / "labels.csv").read_bytes() == (tmp_path / "b" / "labels.csv"
                                                            ).read_bytes()
    name = f"{a['image_id'].iloc[3]}.dcm"
    assert (tmp_path / "a" / "images" / name).read_bytes() == (
        tmp_path / "b" / "images" / name).read_bytes()
    assert set(a["image_id"]) != set(c["image_id"])
    assert a["study"].iloc[0] != c["study"].iloc[0]


def test_by_height_counts_misses_per_band_of_the_series() -> None:
    from bench_altphantom import HEIGHT_BANDS, by_height

    # One 11-slice series: positives at the base (found) and at the vertex (missed).
    frame = pd.DataFrame({"series_instance_uid": "s", "slice_index": range(11),
                          "any": [1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1],
                          "q_any": [0.9, 0.1, 0.2, 0.1, 0.1, 0.3, 0.1, 0.2, 0.4, 0.05, 0.2]})
    rows = by_height(frame)
    assert [r["slices"] for r in rows] == [3, 2, 2, 2, 2] and len(rows) == len(HEIGHT_BANDS) - 1
    assert (rows[0]["positives"], rows[0]["found"]) == (1, 1)
    assert (rows[-1]["positives"], rows[-1]["found"]) == (2, 0)
    assert rows[-1]["auc_any"] is None  # only positives in the band
    assert rows[0]["auc_any"] == 1.0
