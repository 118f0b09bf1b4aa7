"""``ich demo`` end to end on a tiny cohort with tiny training settings."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from ich.cli import main
from ich.labels import LABELS


@pytest.mark.slow
def test_demo_writes_report_submission_and_reuses_its_run(
    tmp_path: Path, tiny_overrides: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--studies", "6", "--test-studies", "2", "--no-serve",
            "--workers", "1", *tiny_overrides, "model.weights=null"]  # the demo's are Lite0's
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "SYNTHETIC phantom cohort" in printed and "3/5 train" in printed
    metrics = json.loads((out / "run" / "metrics.json").read_text())
    assert set(metrics["headline"]["slice"]) >= {"base_rate", "slice_model", "sequence_model"}
    assert "phantom" in (out / "run" / "report.html").read_text().lower()
    sub = pd.read_csv(out / "submission.csv")
    n_test = len(list((out / "test-cohort" / "images").glob("*.dcm")))
    assert len(sub) == n_test * len(LABELS)

    assert main(args) == 0  # the same settings: the finished run is reused, not retrained
    assert "reusing the finished run" in capsys.readouterr().out
    assert main([*args[:4], "7", *args[5:]]) == 1  # other settings, same folder: refused
    assert "other settings" in capsys.readouterr().err
