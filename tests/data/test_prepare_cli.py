"""``ich prepare`` end to end through ``ich.cli.main``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ich.cli import main
from ich.data.cache import SliceCache


def test_prepare_builds_and_summarises(
    tiny_cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cache"
    args = ["prepare", str(tiny_cohort / "images"), "--out", str(out), "--labels",
            str(tiny_cohort / "labels.csv"), "--size", "32", "--workers", "1", "--quiet"]
    assert main(args) == 0
    text = capsys.readouterr().out
    n = len(list((tiny_cohort / "images").glob("*.dcm")))
    assert f"files: {n} ({n} ok, 0 failed)" in text and str(out) in text and "slices/s" in text
    cache = SliceCache(out)
    assert cache.size == 32 and cache.has_labels
    assert main(args) == 0  # rerun: everything already done
    assert "0 built" in capsys.readouterr().out


def test_prepare_reports_failures_and_strict_exit(
    tiny_cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "images"
    src.mkdir()
    for path in sorted((tiny_cohort / "images").glob("*.dcm"))[:4]:
        shutil.copy(path, src / path.name)
    (src / "ID_broken.dcm").write_text("not a DICOM file")
    base = ["prepare", str(src), "--size", "32", "--workers", "1", "--quiet", "--no-crop"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    text = capsys.readouterr().out
    assert "1 failed" in text and "NotDicomError: 1" in text and "ID_broken.dcm" in text
    assert main([*base, "--out", str(tmp_path / "b"), "--strict"]) == 1
    assert "ID_broken.dcm" in capsys.readouterr().err


def test_prepare_rejects_bad_shard(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["prepare", str(tmp_path), "--out", str(tmp_path / "c"), "--shard", "3/2"])
    assert exc.value.code == 2
