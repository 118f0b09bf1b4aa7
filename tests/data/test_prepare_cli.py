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


def _subset(tiny_cohort: Path, tmp_path: Path, n: int = 6) -> Path:
    src = tmp_path / "images"
    src.mkdir()
    for path in sorted((tiny_cohort / "images").glob("*.dcm"))[:n]:
        shutil.copy(path, src / path.name)
    return src


def test_bad_labels_fail_before_any_image_is_read(
    tiny_cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pandas as pd

    src = _subset(tiny_cohort, tmp_path)
    long = pd.read_csv(tiny_cohort / "labels.csv")
    bad = long.astype({"Label": float})
    bad.loc[0, "Label"] = 0.5
    csv = tmp_path / "bad.csv"
    bad.to_csv(csv, index=False)
    out = tmp_path / "cache"
    base = ["prepare", str(src), "--out", str(out), "--size", "32", "--workers", "1", "--quiet"]
    assert main([*base, "--labels", str(csv)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ich prepare: error:") and "is not 0 or 1" in err and str(csv) in err
    assert not out.exists()  # nothing written by a command that failed its checks
    other = tmp_path / "other.csv"
    long.assign(ID=long["ID"].str.replace("ID_", "XX_", regex=False)).to_csv(other, index=False)
    assert main([*base, "--labels", str(other)]) == 1
    assert "matches one of the 6 files" in capsys.readouterr().err and not out.exists()


def test_changed_labels_on_existing_cache_are_detected(
    tiny_cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pandas as pd

    src = _subset(tiny_cohort, tmp_path)
    out = tmp_path / "cache"
    base = ["prepare", str(src), "--out", str(out), "--size", "32", "--workers", "1", "--quiet"]
    assert main([*base, "--labels", str(tiny_cohort / "labels.csv")]) == 0
    text = capsys.readouterr().out
    assert "labels: 6 of 6 files labelled;" in text and "match no file" in text
    # the same labels in the wide format: same digest, accepted
    wide = pd.read_csv(tiny_cohort / "labels.csv")
    parts = wide["ID"].str.rsplit("_", n=1, expand=True)
    table = pd.DataFrame({"ID": parts[0], "label": parts[1], "v": wide["Label"]}).pivot(
        index="ID", columns="label", values="v").reset_index()
    table["ID"] = table["ID"] + ".dcm"
    same = tmp_path / "wide.csv"
    table.to_csv(same, index=False)
    assert main([*base, "--labels", str(same)]) == 0
    capsys.readouterr()
    flipped = table.copy()
    first = flipped["ID"].str[:-4].isin([p.stem for p in src.iterdir()]).idxmax()
    flipped.loc[first, "any"] = 1 - flipped.loc[first, "any"]
    flipped.loc[first, "subdural"] = flipped.loc[first, "any"]
    flipped.loc[first, ["epidural", "intraparenchymal", "intraventricular", "subarachnoid"]] = 0
    changed = tmp_path / "changed.csv"
    flipped.to_csv(changed, index=False)
    assert main([*base, "--labels", str(changed)]) == 1
    assert "--relabel" in capsys.readouterr().err
    assert main(base) == 1  # dropping the labels is a change too
    capsys.readouterr()
    assert main([*base, "--labels", str(changed), "--relabel"]) == 0
    assert "labels replaced" in capsys.readouterr().out
    image = flipped.loc[first, "ID"][:-4]
    cat = SliceCache(out).catalog.set_index("image_id")
    assert cat.loc[image, "any"] == flipped.loc[first, "any"]


def test_small_folder_uses_every_worker(tiny_cohort: Path, tmp_path: Path) -> None:
    from ich.data.build import auto_chunk_size, build_cache
    from ich.data.preprocess import PreprocessSpec

    assert auto_chunk_size(300, 8) == 38 and auto_chunk_size(100_000, 8) == 1024
    assert auto_chunk_size(3, 8) == 1
    src = _subset(tiny_cohort, tmp_path, n=6)
    summary = build_cache(src, tmp_path / "c", spec=PreprocessSpec(size=32), workers=2,
                          progress=False)
    assert summary.chunks_total == 2 and summary.workers == 2 and summary.chunk_size == 3
    again = build_cache(src, tmp_path / "c", spec=PreprocessSpec(size=32), workers=1,
                        progress=False)  # resumed with other workers: keeps its chunks
    assert again.chunks_skipped == 2 and again.chunk_size == 3


def test_skipped_files_and_duplicate_positions_are_reported(
    tiny_cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pydicom

    src = _subset(tiny_cohort, tmp_path, n=4)
    (src / "notes.txt").write_text("x")
    first = sorted(src.glob("*.dcm"))[0]
    ds = pydicom.dcmread(first)
    ds.SOPInstanceUID = ds.SOPInstanceUID + ".9"
    ds.save_as(src / "ID_copyof.dcm")  # same series, same position
    out = tmp_path / "cache"
    assert main(["prepare", str(src), "--out", str(out), "--size", "32", "--workers", "1",
                 "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "note: skipped 1 file(s) (not *.dcm; --all-files reads every file): notes.txt" in text
    assert "note: duplicate slice positions: 1 slice(s) in 1 series" in text
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.png").write_bytes(b"x")
    assert main(["prepare", str(empty), "--out", str(tmp_path / "e"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "no *.dcm files found; skipped 1 file(s)" in err and "a.png" in err
    assert not (tmp_path / "e").exists()
