"""Batch paths record a file's fault and carry on, but a programming bug crashes them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import ich.data.preprocess
import ich.explore.scan
from ich.data.build import build_cache
from ich.data.preprocess import PreprocessSpec
from ich.explore.scan import scan_header, scan_pixels


@pytest.fixture
def folder(write_ct, head_values, tmp_path: Path) -> Path:
    """Two good slices and one without (0028,1052) Rescale Intercept."""
    write_ct("a.dcm", head_values)
    write_ct("b.dcm", head_values, InstanceNumber=2, ImagePositionPatient=[-125.0, -120.5, 47.0])
    write_ct("c.dcm", head_values, RescaleIntercept=None)
    return tmp_path


def _build(src: Path, out: Path) -> None:
    build_cache(src, out, spec=PreprocessSpec(size=32), workers=1, progress=False)


def test_bad_file_is_an_error_row(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "cache"
    _build(folder, out)
    catalog = pd.read_parquet(out / "catalog.parquet")
    bad = catalog[catalog["status"] == "error"]
    assert list(bad["path"].map(lambda p: Path(p).name)) == ["c.dcm"]
    assert "Rescale Intercept" in bad["error"].iloc[0]
    assert bad["error_kind"].iloc[0] == "ModalityLutError"
    assert (catalog["status"] == "ok").sum() == 2


def test_type_error_in_a_batch_build_propagates(folder, tmp_path, monkeypatch) -> None:
    def buggy(*args: object, **kwargs: object) -> None:
        raise TypeError("a bug in ich, not a bad file")

    monkeypatch.setattr(ich.data.preprocess, "preprocess_stored", buggy)
    with pytest.raises(TypeError, match="a bug in ich"):
        _build(folder, tmp_path / "cache")


def test_type_error_in_explore_scan_propagates(folder, monkeypatch) -> None:
    path = folder / "a.dcm"
    assert scan_header(path)["status"] == "ok"
    assert scan_header(folder / "c.dcm")["status"] == "ok"  # the header alone is readable
    assert "Rescale Intercept" in scan_pixels((str(folder / "c.dcm"), True, False))["error"]

    def buggy(_: object) -> None:
        raise TypeError("a bug in ich")

    monkeypatch.setattr(ich.explore.scan, "read_meta", buggy)
    monkeypatch.setattr(ich.explore.scan, "read_slice", buggy)
    with pytest.raises(TypeError):
        scan_header(path)
    with pytest.raises(TypeError):
        scan_pixels((str(path), True, False))
