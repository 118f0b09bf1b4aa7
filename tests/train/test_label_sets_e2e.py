"""Any label set end to end (issue 12.10): the labels of a run come from its data.

A folder of windowed 8-bit PNG slices with a one-column label file (``file,hemorrhage``), as the
Behold.ai challenge and many hospital exports give them, goes through prepare -> train ->
evaluate -> predict; so does a three-label subset of the RSNA labels on DICOM.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from ich.cli import main
from ich.data.cache import SliceCache
from ich.dicom.io import read_slice
from ich.labels import read_labels
from ich.runs.checkpoint import read_spec

pytestmark = pytest.mark.slow

SUBSET = ("intraparenchymal", "epidural", "subarachnoid")


def _png_folder(tiny_cohort: Path, out: Path, n: int) -> tuple[list[Path], Path]:
    """``n`` phantom slices as brain-window PNGs and a one-column ``hemorrhage`` label file."""
    out.mkdir()
    dicoms = sorted((tiny_cohort / "images").glob("*.dcm"))[:n]
    for path in dicoms:
        level = np.rint(np.clip(read_slice(path).hu, 0, 80) / np.float32(80 / 255))
        assert cv2.imwrite(str(out / f"{path.stem}.png"), level.astype(np.uint8))
    six = read_labels(tiny_cohort / "labels.csv").loc[[p.stem for p in dicoms]]
    labels = pd.DataFrame({"file": [f"{p.stem}.png" for p in dicoms],
                           "hemorrhage": six["any"].to_numpy()})
    labels.to_csv(out.parent / "hemorrhage.csv", index=False)
    return dicoms, out.parent / "hemorrhage.csv"


def test_png_folder_with_one_label_trains_evaluates_and_predicts_that_label(
    tiny_cohort: Path, tmp_path: Path, tiny_overrides: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    dicoms, labels = _png_folder(tiny_cohort, tmp_path / "png", 48)
    cache = tmp_path / "cache"
    assert main(["prepare", str(tmp_path / "png"), "--images", "windowed8", "--labels",
                 str(labels), "--out", str(cache), "--size", "32", "--workers", "1",
                 "--quiet"]) == 0
    sc = SliceCache(cache)
    assert sc.label_names == ("hemorrhage",) and sc.labels.shape == (48, 1)
    assert 0 < sc.labels.sum() < 48  # both classes, so AUC and thresholds are defined

    run = tmp_path / "run"
    assert main(["train", str(cache), "--out", str(run), *tiny_overrides,
                 "train.epochs=1"]) == 0
    for name in ("slice_best", "sequence_best"):
        assert read_spec(run / "checkpoints" / f"{name}.safetensors").labels == ("hemorrhage",)
    oof = pd.read_parquet(run / "oof_predictions.parquet")
    assert {"hemorrhage", "p_hemorrhage", "q_hemorrhage"} <= set(oof.columns)
    assert not any(c.endswith("_any") or c == "any" for c in oof.columns)
    thresholds = json.loads((run / "thresholds.json").read_text())
    assert list(thresholds["labels"]) == ["hemorrhage"]
    prevalence = json.loads((run / "train_prevalence.json").read_text())
    assert list(prevalence["slice"]) == ["hemorrhage"]

    assert main(["evaluate", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["labels"] == ["hemorrhage"]
    assert "hemorrhage" in (run / "report.html").read_text()

    src = tmp_path / "dicom"  # the same slices as DICOM: windowed the way the PNGs were
    src.mkdir()
    for path in dicoms[:4]:
        (src / path.name).write_bytes(path.read_bytes())
    sub = tmp_path / "sub.csv"
    capsys.readouterr()
    assert main(["predict", str(run), str(src), "--out", str(sub), "--workers", "1",
                 "--binary"]) == 0
    rows = pd.read_csv(sub)
    assert sorted(rows["ID"]) == sorted(f"{p.stem}_hemorrhage" for p in dicoms[:4])
    assert rows["Label"].between(0, 1).all()
    binary = pd.read_csv(tmp_path / "sub.binary.csv")
    assert list(binary["ID"]) == list(rows["ID"]) and set(binary["Label"]) <= {0, 1}
    series = pd.read_csv(tmp_path / "sub.series.csv")
    assert "hemorrhage" in series.columns and "any" not in series.columns


def test_a_three_label_subset_fine_tunes_a_six_label_run_and_predicts_three_rows(
    tiny_cohort: Path, tmp_path: Path, tiny_overrides: list[str], tiny_run: Path
) -> None:
    """The seeds' transfer workflow: start from an RSNA (six-label) model, keep its backbone,
    train a fresh three-label head."""
    six = read_labels(tiny_cohort / "labels.csv")
    table = six[list(SUBSET)].reset_index().rename(columns={"image_id": "ID"})
    csv = tmp_path / "three.csv"
    table.to_csv(csv, index=False)
    cache = tmp_path / "cache"
    assert main(["prepare", str(tiny_cohort / "images"), "--labels", str(csv), "--out",
                 str(cache), "--size", "64", "--workers", "1", "--quiet"]) == 0
    assert SliceCache(cache).label_names == SUBSET
    run = tmp_path / "run"
    rsna = tiny_run / "checkpoints" / "slice_best.safetensors"
    assert main(["train", str(cache), "--out", str(run), "--weights", str(rsna),
                 *tiny_overrides, "train.epochs=1"]) == 0
    assert read_spec(run / "checkpoints" / "slice_best.safetensors").labels == SUBSET
    first = sorted((tiny_cohort / "images").glob("*.dcm"))[:3]
    src = tmp_path / "dicom"
    src.mkdir()
    for path in first:
        (src / path.name).write_bytes(path.read_bytes())
    sub = tmp_path / "sub.csv"
    assert main(["predict", str(run), str(src), "--out", str(sub), "--workers", "1"]) == 0
    ids = pd.read_csv(sub)["ID"]
    assert len(ids) == 3 * len(SUBSET)
    assert {i.rpartition("_")[2] for i in ids} == set(SUBSET)
