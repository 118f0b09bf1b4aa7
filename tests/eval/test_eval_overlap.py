"""``ich evaluate RUN --data CACHE``: never on the run's own training patients without a word,
and never over the run's out-of-fold report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import ich.predict
from ich.cli import main
from ich.eval.evaluate import evaluate_run
from ich.eval.overlap import training_overlap
from ich.labels import LABELS


def _table(patients: range, slices: int = 6, seed: int = 0) -> pd.DataFrame:
    """A predictions table (the columns ``predict_cache`` returns) for the given patients."""
    rng = np.random.default_rng(seed)
    rows = []
    for pt in patients:
        bleed = rng.random(6) < 0.5
        for i in range(slices):
            y = (bleed & (rng.random(6) < 0.6)).astype(int)
            y[0] = int(y[1:].any())
            rows.append({"image_id": f"ID_{pt:03d}{i:02d}", "patient_id": f"P{pt}",
                         "study_instance_uid": f"S{pt}", "series_instance_uid": f"SE{pt}",
                         "slice_index": i, **dict(zip(LABELS, y.tolist(), strict=True))})
    df = pd.DataFrame(rows)
    y = df[list(LABELS)].to_numpy(float)
    for j, lab in enumerate(LABELS):
        df[f"p_{lab}"] = np.clip(0.6 * y[:, j] + 0.4 * rng.random(len(df)), 0, 1)
    return df


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """A run trained on patients 0-9 with fold 0 (patients 0, 5) held out for validation."""
    run = tmp_path / "run"
    run.mkdir()
    seen = _table(range(10))
    folds = seen[["image_id", "patient_id", "study_instance_uid", "series_instance_uid",
                  "slice_index"]].copy()
    folds["fold"] = folds["patient_id"].str[1:].astype(int) % 5
    folds.to_csv(run / "folds.csv", index=False)
    (run / "config.yaml").write_text("data:\n  folds: 5\n  fold: 0\n")
    oof = seen[folds["fold"] == 0].assign(fold=0)
    oof.to_parquet(run / "oof_predictions.parquet")
    evaluate_run(run, plots=False)  # the run's own out-of-fold report
    return run


@pytest.fixture
def predicting(monkeypatch: pytest.MonkeyPatch) -> dict[str, pd.DataFrame]:
    """``predict_cache`` replaced: returns ``table["df"]`` (set by the test)."""
    table: dict[str, pd.DataFrame] = {}
    monkeypatch.setattr(ich.predict, "predict_cache", lambda runs, cache, tta=1: table["df"])
    monkeypatch.setattr("ich.eval.evaluate._make_plots", lambda *a, **k: {})
    return table


def _snapshot(run: Path) -> dict[str, bytes]:
    return {name: (run / name).read_bytes() for name in ("metrics.json", "report.html")}


def test_overlap_with_training_patients_is_refused(run, predicting, tmp_path, capsys) -> None:
    before = _snapshot(run)
    predicting["df"] = _table(range(8, 14), seed=1)  # patients 8 and 9 were trained on
    rc = main(["evaluate", str(run), "--data", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert rc == 1 and "ich evaluate: error:" in err
    assert "2 patients" in err and "--allow-overlap" in err and "P8" in err
    assert _snapshot(run) == before
    assert not (run / "evaluations").exists()  # nothing created by a refused command


def test_validation_fold_patients_are_not_training_patients(run) -> None:
    found = training_overlap(run, _table([0, 5, 20]))  # 0 and 5: the validation fold
    assert found.known and found.n_patients == 0 and found.n_images == 0
    found = training_overlap(run, _table([1, 20]))
    assert (found.n_patients, found.n_images, found.n_eval_patients) == (1, 6, 2)


def test_allow_overlap_reports_it(run, predicting, tmp_path, capsys) -> None:
    before = _snapshot(run)
    predicting["df"] = _table(range(8, 14), seed=1)
    rc = main(["evaluate", str(run), "--data", str(tmp_path / "cache"), "--allow-overlap"])
    captured = capsys.readouterr()
    assert rc == 0 and "warning" in captured.err and "2 patients" in captured.err
    out = run / "evaluations" / "cache"
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["overlap"]["n_patients"] == 2 and saved["overlap"]["n_images"] == 12
    assert "--allow-overlap" in (out / "report.html").read_text()  # in the reproduce command
    assert "training" in (out / "report.html").read_text().split("<h2>")[0]  # banner on top
    assert _snapshot(run) == before


def test_held_out_data_goes_to_a_new_folder_each_time(run, predicting, tmp_path, capsys) -> None:
    before = _snapshot(run)
    predicting["df"] = _table(range(20, 26), seed=2)
    cache = tmp_path / "cache"
    assert main(["evaluate", str(run), "--data", str(cache)]) == 0
    assert "warning" not in capsys.readouterr().err
    assert main(["evaluate", str(run), "--data", str(cache)]) == 0
    first, second = run / "evaluations" / "cache", run / "evaluations" / "cache-2"
    for out in (first, second):
        saved = json.loads((out / "metrics.json").read_text())
        assert saved["n_studies"] == 6 and saved["overlap"]["n_patients"] == 0
        assert (out / "report.html").is_file()
    assert _snapshot(run) == before


def test_explicit_out_and_refusal_to_write_over_the_run(run, predicting, tmp_path, capsys):
    predicting["df"] = _table(range(20, 24), seed=3)
    out = tmp_path / "elsewhere"
    assert main(["evaluate", str(run), "--data", str(tmp_path / "c"), "--out", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["n_studies"] == 4
    before = _snapshot(run)
    assert main(["evaluate", str(run), "--data", str(tmp_path / "c"), "--out", str(run)]) == 1
    assert "out-of-fold report" in capsys.readouterr().err
    assert _snapshot(run) == before


def test_run_without_folds_cannot_be_checked(tmp_path, predicting, capsys) -> None:
    run = tmp_path / "bare"
    run.mkdir()
    predicting["df"] = _table(range(3))
    assert main(["evaluate", str(run), "--data", str(tmp_path / "c")]) == 0
    assert "cannot check" in capsys.readouterr().err
    saved = json.loads((run / "evaluations" / "c" / "metrics.json").read_text())
    assert saved["overlap"]["known"] is False


def test_fold_set_and_all_fold_runs_trained_on_every_row(run) -> None:
    (run / "config.yaml").write_text("data:\n  folds: 5\n  fold: -1\n")
    assert training_overlap(run, _table([0, 20])).n_patients == 1  # no held-out fold
    (run / "config.yaml").write_text("data:\n  folds: 5\n  fold: 0\n")
    (run / "foldset.json").write_text("{}")
    assert training_overlap(run, _table([0, 5, 20])).n_patients == 2  # each fold run's training
