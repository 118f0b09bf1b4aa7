"""Series grouping and ordering along the slice normal, object and DataFrame flavours."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest

from ich.dicom.io import read_meta
from ich.dicom.series import (
    IOP_COLUMNS,
    IPP_COLUMNS,
    flatten_meta,
    order_catalog,
    order_series,
    slice_normal,
    slice_positions,
)

TILT = 0.25  # gantry tilt, radians
TILTED = (1.0, 0.0, 0.0, 0.0, math.cos(TILT), -math.sin(TILT))


def _series(meta_factory, zs, *, iop=(1, 0, 0, 0, 1, 0), series="SE1", shuffle=True, **kw):
    """Slices at positions ``zs`` along the normal of ``iop``; file order shuffled."""
    normal = slice_normal(iop)
    metas = [
        meta_factory(
            path=f"{series}_{i}.dcm", sop_instance_uid=f"{series}.{i}", series_instance_uid=series,
            instance_number=len(zs) - i,  # deliberately the reverse of the true order
            image_position_patient=tuple(float(v) for v in np.array([-120.0, -100.0, 0.0])
                                         + z * normal),
            image_orientation_patient=iop, **kw,
        )
        for i, z in enumerate(zs)
    ]
    if shuffle:
        rng = np.random.default_rng(len(zs))
        metas = [metas[i] for i in rng.permutation(len(metas))]
    return metas


def test_slice_normal():
    np.testing.assert_allclose(slice_normal((1, 0, 0, 0, 1, 0)), [0, 0, 1])
    np.testing.assert_allclose(slice_normal(TILTED), [0, math.sin(TILT), math.cos(TILT)])
    np.testing.assert_allclose(slice_normal((2, 0, 0, 0, 2, 0)), [0, 0, 1])  # normalised


def test_order_by_position_not_instance_number(meta_factory):
    zs = [0.0, 5.0, 10.0, 15.0, 20.0]
    (s,) = order_series(_series(meta_factory, zs, iop=TILTED))
    np.testing.assert_allclose(s.z - s.z[0], zs, atol=1e-9)
    assert [m.path for m in s.metas] == [f"SE1_{i}.dcm" for i in range(5)]
    np.testing.assert_allclose(s.z_spacing, [5.0] * 5)
    assert s.issues == [] and len(s) == 5
    np.testing.assert_allclose(slice_positions(s.metas), s.z)


def test_first_spacing_is_the_second(meta_factory):
    (s,) = order_series(_series(meta_factory, [0.0, 2.0, 7.0]))
    np.testing.assert_allclose(s.z_spacing, [2.0, 2.0, 5.0])


def test_groups_by_study_and_series(meta_factory):
    metas = _series(meta_factory, [0, 5, 10], series="A")
    metas += _series(meta_factory, [0, 3], series="B")
    metas += [meta_factory(path="c.dcm", study_instance_uid="ST2", series_instance_uid="A")]
    out = order_series(metas[::-1])
    assert [(s.study_instance_uid, s.series_instance_uid, len(s)) for s in out] == [
        ("ST1", "A", 3), ("ST1", "B", 2), ("ST2", "A", 1)]
    assert out[2].z_spacing.tolist() == [5.0]  # single slice: its thickness


def test_fallback_to_instance_number(meta_factory):
    metas = _series(meta_factory, [0, 5, 10])
    metas[1] = meta_factory(**{**metas[1].to_dict(), "image_position_patient": None})
    (s,) = order_series(metas)
    assert [m.instance_number for m in s.metas] == [1, 2, 3]
    assert any("InstanceNumber" in i for i in s.issues)
    np.testing.assert_allclose(s.z, [0, 5, 10])  # estimated from SliceThickness


def test_duplicates_reported(meta_factory):
    metas = _series(meta_factory, [0, 5, 5, 10])
    (s,) = order_series(metas)
    assert any("duplicate positions" in i for i in s.issues)
    metas = _series(meta_factory, [0, 5, 10])
    metas.append(meta_factory(**{**metas[0].to_dict(), "path": "copy.dcm"}))
    (s,) = order_series(metas)
    assert any("SOPInstanceUID" in i for i in s.issues)


def test_mixed_orientation_reported(meta_factory):
    metas = _series(meta_factory, [0, 5]) + _series(meta_factory, [10, 15], iop=TILTED)
    (s,) = order_series(metas)
    assert any("mixed orientations" in i for i in s.issues)


def test_gap_reported(meta_factory):
    (s,) = order_series(_series(meta_factory, [0, 5, 10, 15, 30, 35]))
    assert any("gaps: 1" in i for i in s.issues)
    (ok,) = order_series(_series(meta_factory, [0, 5, 10, 15]))
    assert ok.issues == []


def test_neighbours_clamped(meta_factory):
    (s,) = order_series(_series(meta_factory, [0, 5, 10]))
    assert s.neighbours(0) == [0, 0, 1] and s.neighbours(2, (-2, 0, 2)) == [0, 2, 2]


def test_flatten_meta_columns(meta_factory):
    row = flatten_meta(meta_factory(pixel_spacing=None))
    assert set(IPP_COLUMNS) | set(IOP_COLUMNS) <= set(row)
    assert row["image_position_patient_2"] == 0.0 and row["image_orientation_patient_4"] == 1.0
    assert math.isnan(row["pixel_spacing_0"]) and "image_position_patient" not in row
    assert row["series_instance_uid"] == "SE1"


def test_order_catalog_matches_order_series(meta_factory):
    metas = (_series(meta_factory, [0, 5, 10, 15], series="A", iop=TILTED)
             + _series(meta_factory, [3, 1, 2], series="B")
             + [meta_factory(path="solo.dcm", series_instance_uid="C", slice_thickness=2.5)])
    broken = _series(meta_factory, [0, 5, 10], series="D")
    broken[0] = meta_factory(**{**broken[0].to_dict(), "image_orientation_patient": None})
    metas += broken
    df = pd.DataFrame([flatten_meta(m) for m in metas], index=np.arange(len(metas)) * 10)
    out = order_catalog(df)
    assert list(out.index) == list(df.index) and "slice_index" not in df  # a copy, same rows
    for s in order_series(metas):
        sub = out[out.series_instance_uid == s.series_instance_uid].sort_values("slice_index")
        assert list(sub.path) == [m.path for m in s.metas]
        assert sub.slice_index.tolist() == list(range(len(s)))
        assert (sub.n_slices == len(s)).all()
        np.testing.assert_allclose(sub.z, s.z, atol=1e-9)
        np.testing.assert_allclose(sub.z_spacing, s.z_spacing, atol=1e-9)
    assert set(out.loc[out.series_instance_uid == "D", "ordered_by"]) == {"instance_number"}
    assert set(out.loc[out.series_instance_uid == "A", "ordered_by"]) == {"position"}


@pytest.mark.parametrize("seed", range(5))
def test_order_catalog_matches_order_series_random(meta_factory, seed):
    rng = np.random.default_rng(seed)
    metas = []
    for k in range(6):
        n = int(rng.integers(1, 12))
        zs = rng.choice(np.arange(0.0, 60.0, 2.5), size=n, replace=bool(rng.random() < 0.3))
        series = _series(meta_factory, list(zs), series=f"S{k}", iop=TILTED if k % 2 else
                         (1, 0, 0, 0, 1, 0), slice_thickness=float(rng.choice([0.0, 2.5, 5.0])))
        for i, m in enumerate(series):
            fields = m.to_dict()
            if rng.random() < 0.15:
                fields["instance_number"] = None if rng.random() < 0.5 else 0
            if k == 5 and i == 0:
                fields["image_position_patient"] = None
            series[i] = meta_factory(**fields)
        metas += series
    out = order_catalog(pd.DataFrame([flatten_meta(m) for m in metas]))
    for s in order_series(metas):
        sub = out[out.series_instance_uid == s.series_instance_uid].sort_values("slice_index")
        assert list(sub.path) == [m.path for m in s.metas]
        np.testing.assert_allclose(sub.z, s.z, atol=1e-9)
        np.testing.assert_allclose(sub.z_spacing, s.z_spacing, atol=1e-9)


def test_order_catalog_empty():
    cols = ["study_instance_uid", "series_instance_uid", *IPP_COLUMNS, *IOP_COLUMNS,
            "instance_number"]
    out = order_catalog(pd.DataFrame(columns=cols))
    assert len(out) == 0 and {"slice_index", "z", "z_spacing", "n_slices"} <= set(out.columns)


@pytest.mark.slow
def test_order_catalog_scales():
    n, rng = 750_000, np.random.default_rng(0)
    series = rng.integers(0, 21_700, n)
    df = pd.DataFrame({
        "study_instance_uid": pd.Series(series).map("ST{}".format),
        "series_instance_uid": pd.Series(series).map("SE{}".format),
        **{c: rng.normal(size=n) for c in IPP_COLUMNS},
        **{c: float(v) for c, v in zip(IOP_COLUMNS, (1, 0, 0, 0, 1, 0), strict=True)},
        "instance_number": rng.integers(1, 60, n).astype(float),
    })
    start = time.perf_counter()
    out = order_catalog(df)
    assert time.perf_counter() - start < 15
    first = out[out.series_instance_uid == "SE7"].sort_values("slice_index")
    assert np.all(np.diff(first.z) >= 0)


@pytest.mark.real
def test_real_sample_series(rsna_sample):
    metas = [read_meta(f) for f in sorted(rsna_sample.glob("stage_2_*/*.dcm"))]
    out = order_series(metas)
    counts = {s.patient_id: len(s) for s in out}
    assert len(out) == 4 and sum(counts.values()) == 123
    assert counts["ID_d1217a66"] == 30  # the test-set patient (README)
    for s in out:
        assert np.all(np.diff(s.z) > 0), s.series_instance_uid  # strictly monotonic
        assert s.issues == []
        assert np.all((s.z_spacing > 4) & (s.z_spacing < 6))
    cat = order_catalog(pd.DataFrame([flatten_meta(m) for m in metas]))
    assert sorted(cat.groupby("series_instance_uid").n_slices.first()) == sorted(
        len(s) for s in out)
