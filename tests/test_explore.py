"""``ich explore`` on the phantom cohort and on the real RSNA sample (with a corrupt file)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from ich.cli import main
from ich.eval.html import RESEARCH_BANNER
from ich.explore import explore_folder


@pytest.mark.slow  # >= 5 s of CPU (20-34 s wall on the loaded 2-core machine)
def test_explore_tiny_cohort(tiny_cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    s = explore_folder(
        tiny_cohort / "images",
        out,
        tiny_cohort / "labels.csv",
        sample=20,
        workers=1,
        progress=False,
    )
    truth = pd.read_csv(tiny_cohort / "patients.csv")
    assert s.n_files == s.n_ok == len(truth) and s.n_failed == 0
    assert s.n_series == truth["series_instance_uid"].nunique()
    assert s.n_studies == truth["study_instance_uid"].nunique() == 6
    assert s.n_patients == truth["patient_id"].nunique()
    assert s.n_labelled == len(truth)
    assert s.n_pixel_sampled == 20
    html = (out / "index.html").read_text()
    assert RESEARCH_BANNER in html
    assert f"<div class='v'>{s.n_series}</div><div class='k'>series</div>" in html
    for name in (
        "hu_histogram",
        "slices_per_series",
        "label_counts",
        "label_cooccurrence",
        "grid_brain",
        "grid_subdural",
        "grid_soft_tissue",
        "grid_bone",
    ):
        assert (out / f"{name}.png").is_file() and f"{name}.png" in html
    assert "negative" in html or (out / "grid_brain.png").stat().st_size > 10_000
    assert json.loads((out / "summary.json").read_text())["n_series"] == s.n_series
    assert len(pd.read_csv(out / "headers.csv")) == s.n_files


def test_explore_without_labels(tiny_cohort: Path, tmp_path: Path) -> None:
    s = explore_folder(tiny_cohort / "images", tmp_path, sample=5, workers=1, progress=False)
    html = (tmp_path / "index.html").read_text()
    assert s.n_labelled == 0 and "No label CSV given" in html
    assert (tmp_path / "grid_brain.png").is_file()


@pytest.mark.slow  # >= 5 s of CPU (20-34 s wall on the loaded 2-core machine)
@pytest.mark.real
def test_explore_real_sample_with_corrupt_file(rsna_sample: Path, tmp_path: Path) -> None:
    folder = tmp_path / "dicom"
    shutil.copytree(rsna_sample / "stage_2_train", folder)
    (folder / "ID_corrupt0001.dcm").write_bytes(b"this is not a DICOM file at all")
    out = tmp_path / "report"
    rc = main(
        [
            "explore",
            str(folder),
            "--labels",
            str(rsna_sample / "stage_2_train.csv"),
            "--out",
            str(out),
            "--workers",
            "2",
            "--sample",
            "30",
        ]
    )
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    assert (s["n_files"], s["n_ok"], s["n_failed"]) == (94, 93, 1)
    assert (s["n_patients"], s["n_studies"], s["n_series"]) == (3, 3, 3)
    assert s["n_labelled"] == 93
    html = (out / "index.html").read_text()
    assert "ID_corrupt0001.dcm" in html
    assert "<div class='v'>3</div><div class='k'>series</div>" in html
    assert "multi-valued" in html and "Implicit VR Little Endian" in html
    assert "intraparenchymal" in html and (out / "grid_subdural.png").is_file()


def test_explore_cli_rejects_missing_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["explore", str(tmp_path / "absent"), "--out", str(tmp_path / "o")]) == 1
    assert "not a folder" in capsys.readouterr().err


def test_explore_empty_folder_says_so(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    s = explore_folder(tmp_path / "in", tmp_path / "out", progress=False)
    assert s.n_files == 0
    assert "No DICOM files" in (tmp_path / "out" / "index.html").read_text()


def test_explore_reports_skipped_files(
    tiny_cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "images"
    src.mkdir()
    for path in sorted((tiny_cohort / "images").glob("*.dcm"))[:3]:
        shutil.copy(path, src / path.name)
    (src / "scan.png").write_bytes(b"png")
    assert main(["explore", str(src), "--out", str(tmp_path / "x"), "--workers", "1",
                 "--sample", "3"]) == 0
    assert "skipped 1 file(s) not taken as DICOM" in capsys.readouterr().out


def test_explore_reports_slices_at_the_same_position_and_any_label_set(
    tiny_cohort: Path, tmp_path: Path
) -> None:
    import pydicom

    src = tmp_path / "images"
    src.mkdir()
    files = sorted((tiny_cohort / "images").glob("*.dcm"))[:4]
    for path in files:
        shutil.copy(path, src / path.name)
    twin = pydicom.dcmread(files[0])  # the same slice exported again under a new UID
    twin.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.999"
    twin.save_as(src / "ID_twin.dcm")
    labels = tmp_path / "one.csv"
    pd.DataFrame({"file": [p.name for p in files], "hemorrhage": [1, 0, 0, 1]}).to_csv(
        labels, index=False)
    s = explore_folder(src, tmp_path / "out", labels, sample=5, workers=1, progress=False)
    html = (tmp_path / "out" / "index.html").read_text()
    assert s.n_ok == 5
    assert "1 slice(s) in 1 series sit at the same position" in html
    assert "hemorrhage" in html and "intraparenchymal" not in html
    assert (tmp_path / "out" / "label_counts.png").is_file()
