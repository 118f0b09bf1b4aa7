"""``ich predict``: 0/1 decisions at the run's thresholds, skipped files reported."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from ich.cli import main
from ich.eval.thresholds import load_thresholds, thresholds_from_oof
from ich.labels import LABELS


@pytest.mark.slow
def test_binary_decisions_and_skipped_files(
    tiny_run: Path, tiny_cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    src = tmp_path / "images"
    src.mkdir()
    for path in sorted((tiny_cohort / "images").glob("*.dcm"))[:5]:
        shutil.copy(path, src / path.name)
    (src / "readme.txt").write_text("not an image")
    out = tmp_path / "sub.csv"
    args = ["predict", str(run), str(src), "--out", str(out), "--binary", "--workers", "1"]
    assert main(args) == 1  # no thresholds yet: refused before predicting
    assert "thresholds.json" in capsys.readouterr().err and not out.exists()
    thresholds_from_oof(run, LABELS)
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "skipped 1 file(s): readme.txt (only *.dcm files are predicted)" in text
    probs, binary = pd.read_csv(out), pd.read_csv(tmp_path / "sub.binary.csv")
    assert binary["ID"].tolist() == probs["ID"].tolist() and len(binary) == 5 * len(LABELS)
    assert set(binary["Label"].unique()) <= {0, 1}
    cuts = load_thresholds(run)
    label = probs["ID"].str.rsplit("_", n=1).str[-1]
    expected = (probs["Label"] >= label.map(cuts)).astype(int)
    assert binary["Label"].tolist() == expected.tolist()
