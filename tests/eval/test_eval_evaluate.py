"""evaluate_run, the report and ``ich evaluate`` on a synthetic predictions table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ich.cli import main
from ich.eval.evaluate import evaluate_run
from ich.eval.html import PHANTOM_BANNER, RESEARCH_BANNER
from ich.eval.metrics import compute_metrics, study_level
from ich.eval.plots import plot_training_curves
from ich.eval.result import Evaluation
from ich.labels import LABELS


def _predictions(seed: int = 0, studies: int = 12, sequence: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(studies):
        bleed = rng.random(6) < 0.5
        for i in range(10):
            y = (bleed & (rng.random(6) < 0.5)).astype(int)
            y[0] = int(y[1:].any())
            rows.append(
                {
                    "image_id": f"ID_{s:03d}{i:02d}",
                    "patient_id": f"P{s}",
                    "study_instance_uid": f"S{s}",
                    "series_instance_uid": f"SE{s}",
                    "slice_index": i,
                    "fold": s % 3,
                    **{lab: int(v) for lab, v in zip(LABELS, y, strict=True)},
                }
            )
    df = pd.DataFrame(rows)
    y = df[list(LABELS)].to_numpy(float)
    p = np.clip(0.5 * y + 0.4 * rng.random(y.shape) + 0.05, 0, 1)
    for j, lab in enumerate(LABELS):
        df[f"p_{lab}"] = p[:, j]
        if sequence:
            df[f"q_{lab}"] = np.clip(0.8 * y[:, j] + 0.15 * rng.random(len(df)) + 0.02, 0, 1)
    return df


def _write_log(path: Path) -> None:
    with path.open("w") as f:
        for stage in ("slice", "sequence"):
            for step in range(1, 31):
                f.write(
                    json.dumps(
                        {
                            "stage": stage,
                            "epoch": step // 10,
                            "step": step,
                            "split": "train",
                            "loss": 1 / step,
                        }
                    )
                    + "\n"
                )
            for epoch in range(3):
                f.write(
                    json.dumps(
                        {
                            "stage": stage,
                            "epoch": epoch,
                            "step": 10 * epoch,
                            "split": "val",
                            "loss": 0.2,
                            "wll": 0.3 - 0.05 * epoch,
                        }
                    )
                    + "\n"
                )
        f.write("{not json\n")


@pytest.mark.slow  # >= 5 s of CPU (20-34 s wall on the loaded 2-core machine)
def test_evaluate_run_writes_consistent_metrics_and_report(tmp_path: Path) -> None:
    df = _predictions()
    df.to_parquet(tmp_path / "oof_predictions.parquet")
    (tmp_path / "config.yaml").write_text("data:\n  source: synthetic phantom cohort\n")
    _write_log(tmp_path / "metrics.jsonl")
    result = evaluate_run(tmp_path)

    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert {"headline", "levels", "baseline_source", "models", "n_slices", "n_studies"} <= set(
        saved
    )
    assert saved["models"] == ["slice_model", "sequence_model"]
    assert saved["n_slices"] == len(df) and saved["n_studies"] == 12
    y = df[list(LABELS)].to_numpy(float)
    p = df[[f"p_{lab}" for lab in LABELS]].to_numpy(float)
    ref = compute_metrics(y, p)
    got = saved["levels"]["slice"]["slice_model"]
    assert got["weighted_log_loss"] == pytest.approx(ref["weighted_log_loss"])
    assert got["labels"]["any"]["auc"] == pytest.approx(ref["labels"]["any"]["auc"])
    big_y, big_p, _ = study_level(y, p, df["study_instance_uid"].to_numpy())
    study = saved["levels"]["study"]["slice_model"]
    assert study["weighted_log_loss"] == pytest.approx(
        compute_metrics(big_y, big_p)["weighted_log_loss"]
    )
    base = saved["levels"]["slice"]["base_rate"]
    np.testing.assert_allclose(base["prevalence_used"], y.mean(0))
    assert "evaluated rows" in saved["baseline_source"]["slice"]
    head = saved["headline"]["slice"]
    assert head["base_rate"]["ratio_to_base_rate"] == pytest.approx(1.0)
    assert head["sequence_model"]["ratio_to_base_rate"] < 1.0

    html = (tmp_path / "report.html").read_text()
    assert RESEARCH_BANNER in html and PHANTOM_BANNER in html
    assert "Base rate (constant)" in html and "Sequence model" in html
    assert "<script" not in html and "http" not in html  # self-contained
    for rel in result.figures.values():
        assert (tmp_path / rel).is_file() and rel in html
    assert "training_curves" in result.figures
    # The typed result is metrics.json, byte for byte, and reads back from it.
    text = (tmp_path / "metrics.json").read_text()
    assert json.dumps(result.to_json(), indent=2, allow_nan=False) == text
    assert Evaluation.from_json(saved, result.report) == result
    assert result.report == tmp_path / "report.html"
    assert result.headline["slice"]["base_rate"].ratio_to_base_rate == pytest.approx(1.0)


def test_evaluate_run_slice_only_and_train_prevalence(tmp_path: Path) -> None:
    df = _predictions(seed=1, sequence=False)
    prev = {lab: 0.1 for lab in LABELS}
    (tmp_path / "train_prevalence.json").write_text(json.dumps({"slice": prev}))
    result = evaluate_run(tmp_path, predictions=df, threshold=0.3, plots=False)
    assert result.models == ("slice_model",)
    assert result.threshold == 0.3
    assert result.levels["slice"]["base_rate"]["prevalence_used"] == [0.1] * 6
    assert "train_prevalence.json" in result.baseline_source["slice"]
    assert "evaluated rows" in result.baseline_source["study"]
    html = (tmp_path / "report.html").read_text()
    assert PHANTOM_BANNER not in html  # no config or provenance: no phantom claim
    assert "No training log" in html


def test_single_class_label_does_not_crash(tmp_path: Path) -> None:
    df = _predictions(seed=2)
    df["epidural"] = 0
    result = evaluate_run(tmp_path, predictions=df, plots=False)
    assert result.levels["slice"]["slice_model"]["labels"]["epidural"]["auc"] is None
    json.loads((tmp_path / "metrics.json").read_text())  # strict JSON (None, not NaN)


def test_training_curves_absent_or_present(tmp_path: Path) -> None:
    assert plot_training_curves(tmp_path / "missing.jsonl", tmp_path / "c.png") is None
    _write_log(tmp_path / "metrics.jsonl")
    out = plot_training_curves(tmp_path / "metrics.jsonl", tmp_path / "c.png")
    assert out is not None and out.read_bytes()[:4] == b"\x89PNG"


def test_cli_evaluate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _predictions(seed=3).to_parquet(tmp_path / "oof_predictions.parquet")
    assert main(["evaluate", str(tmp_path), "--threshold", "0.4"]) == 0
    out = capsys.readouterr().out
    assert "sequence_model" in out and str(tmp_path / "report.html") in out
    assert main(["evaluate", str(tmp_path / "nothing")]) == 1
    assert "oof_predictions.parquet" in capsys.readouterr().err


def test_cli_evaluate_with_data_predicts_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import ich.predict

    calls = []

    def fake_predict_cache(run_dirs: list[Path], cache: Path, tta: int = 1) -> pd.DataFrame:
        calls.append((run_dirs, cache, tta))
        return _predictions(seed=4, studies=4)

    monkeypatch.setattr(ich.predict, "predict_cache", fake_predict_cache)
    monkeypatch.setattr("ich.eval.evaluate._make_plots", lambda *a, **k: {})
    rc = main(["evaluate", str(tmp_path), "--data", str(tmp_path / "cache"), "--tta", "2"])
    assert rc == 0
    assert calls == [([tmp_path], tmp_path / "cache", 2)]
    # Written to a new folder, not over the run's own (out-of-fold) report.
    assert not (tmp_path / "metrics.json").exists()
    saved = json.loads((tmp_path / "evaluations" / "cache" / "metrics.json").read_text())
    assert saved["n_studies"] == 4 and "predicted by this run" in saved["source"]
    assert "report.html" in capsys.readouterr().out


def test_metrics_and_report_carry_study_bootstrap_intervals(tmp_path: Path) -> None:
    df = _predictions(seed=5, studies=20)
    noise = np.random.default_rng(0).normal(0, 0.3, len(df))
    df["p_any"] = np.clip(df["p_any"] + noise, 0, 1)  # not separable: a real interval
    result = evaluate_run(tmp_path, predictions=df, plots=False)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    for level in ("slice", "study"):
        model = saved["levels"][level]["sequence_model"]
        assert model["bootstrap"]["n_resamples"] == 1000 and model["bootstrap"]["n_groups"] == 20
        for label in LABELS:
            lm = model["labels"][label]
            for key, point in (("auc", lm["auc"]),
                               ("sensitivity", lm["at_threshold"]["sensitivity"]),
                               ("specificity", lm["at_threshold"]["specificity"])):
                ci = lm["ci95"][key]
                assert ci["estimate"] == pytest.approx(point) if point is not None else True
                if ci["low"] is not None:
                    assert ci["low"] <= ci["estimate"] <= ci["high"]
    study_any = saved["levels"]["study"]["slice_model"]["labels"]["any"]["ci95"]["auc"]
    slice_any = saved["levels"]["slice"]["slice_model"]["labels"]["any"]["ci95"]["auc"]
    assert study_any["high"] >= study_any["low"] and slice_any["high"] > slice_any["low"]
    # Resampling studies: the slice-level interval is not the narrow one of 200 free slices.
    assert slice_any["high"] - slice_any["low"] > 0.02
    html = (tmp_path / "report.html").read_text()
    shown = f"{slice_any['estimate']:.2f} ({slice_any['low']:.2f}–{slice_any['high']:.2f})"
    assert shown in html and "bootstrap interval, 1,000 resamples of the 20 studies" in html
    assert result.levels["study"]["slice_model"]["bootstrap"]["seed"] == 0
    again = evaluate_run(tmp_path, predictions=df, plots=False)
    assert again.levels == result.levels  # seeded: the same intervals every time


def test_bootstrap_can_be_switched_off(tmp_path: Path) -> None:
    result = evaluate_run(tmp_path, predictions=_predictions(seed=6), plots=False, n_resamples=0)
    model = result.levels["study"]["slice_model"]
    assert "ci95" not in model["labels"]["any"] and "disabled" in model["bootstrap"]["skipped"]


def test_levels_over_the_bootstrap_budget_say_why(tmp_path: Path, monkeypatch) -> None:
    df = _predictions(seed=7)  # 120 slices in 12 studies
    monkeypatch.setattr("ich.eval.evaluate.MAX_BOOTSTRAP_CELLS", 50 * 1000)
    result = evaluate_run(tmp_path, predictions=df, plots=False)
    slice_boot = result.levels["slice"]["slice_model"]["bootstrap"]
    assert "over the budget" in slice_boot["skipped"]
    assert "ci95" not in result.levels["slice"]["slice_model"]["labels"]["any"]
    assert "ci95" in result.levels["study"]["slice_model"]["labels"]["any"]
    assert "No bootstrap intervals here" in (tmp_path / "report.html").read_text()
