"""``ich synth``: the command writes a cohort and prints a summary that says it is synthetic."""

from __future__ import annotations

from pathlib import Path

import pytest

from ich.cli import main


def test_synth_writes_a_cohort_and_summarises(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                              ) -> None:
    out = tmp_path / "cohort"
    code = main(["synth", str(out), "--studies", "2", "--seed", "4", "--size", "64",
                 "--prevalence", "0.5"])
    captured = capsys.readouterr()
    assert code == 0
    assert "synthetic" in captured.err
    assert "Positive slices per label" in captured.out and "subdural" in captured.out
    assert str(out / "labels.csv") in captured.out
    assert len(list((out / "images").glob("ID_*.dcm"))) >= 48


def test_synth_reports_bad_options_as_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                             ) -> None:
    code = main(["synth", str(tmp_path), "--studies", "0"])
    assert code == 1
    assert "ich synth: error: studies must be at least 1" in capsys.readouterr().err
