"""``ich train --all-folds``: k fold runs, out-of-fold embeddings, the fold set as one model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ich.cli import main
from ich.config import load_config
from ich.data.cache import SliceCache
from ich.labels import LABELS
from ich.runs.foldset import expand_runs, fold_runs, is_fold_set
from ich.train.embeddings import load_embeddings
from ich.train.sequence_stage import embed_with_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fold_set(
    tiny_cache: Path, tiny_overrides: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("foldset") / "cv"
    args = ["train", str(tiny_cache), "--out", str(out), "--all-folds", "train.epochs=1",
            *tiny_overrides]
    assert main(args) == 0
    return out


def test_every_fold_is_a_complete_run(fold_set: Path) -> None:
    assert is_fold_set(fold_set)
    runs = fold_runs(fold_set)
    assert [r.name for r in runs] == ["fold0", "fold1", "fold2"]
    for i, run in enumerate(runs):
        assert (run / "checkpoints" / "slice_best.safetensors").is_file()
        assert (run / "checkpoints" / "sequence_best.safetensors").is_file()
        assert load_config(run / "config.yaml").data.fold == i
    assert expand_runs([fold_set, runs[0]]) == [*runs, runs[0]]


def test_embeddings_are_out_of_fold(fold_set: Path, tiny_cache: Path) -> None:
    cache = SliceCache(tiny_cache)
    saved = load_embeddings(fold_set / "oof" / "slice_embeddings.npz")
    folds = saved["fold"]
    assert len(folds) == len(cache) and set(np.unique(folds)) == {0, 1, 2}
    # Each slice's embedding is the one of the slice model that did not train on it.
    for i, run in enumerate(fold_runs(fold_set)):
        rows = np.flatnonzero(folds == i)[:3]
        emb, logits = embed_with_run(load_config(run / "config.yaml"), cache, run,
                                     torch.device("cpu"), rows)
        np.testing.assert_allclose(saved["embeddings"][rows], emb, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(saved["logits"][rows], logits, rtol=1e-4, atol=1e-5)
        other = fold_runs(fold_set)[(i + 1) % 3]
        emb_other, _ = embed_with_run(load_config(other / "config.yaml"), cache, other,
                                      torch.device("cpu"), rows)
        assert not np.allclose(saved["embeddings"][rows], emb_other, atol=1e-3)


def test_oof_predictions_cover_every_labelled_slice(fold_set: Path, tiny_cache: Path) -> None:
    cache = SliceCache(tiny_cache)
    oof = pd.read_parquet(fold_set / "oof_predictions.parquet")
    assert sorted(oof["image_id"]) == sorted(cache.catalog["image_id"])
    assert sorted(oof["fold"].unique()) == [0, 1, 2]
    for prefix in ("p_", "q_"):
        values = oof[[f"{prefix}{n}" for n in LABELS]].to_numpy()
        assert np.isfinite(values).all() and ((values > 0) & (values < 1)).all()
    assert (fold_set / "train_prevalence.json").is_file()


def test_evaluate_and_predict_take_the_fold_set(
    fold_set: Path, tiny_cache: Path, tmp_path: Path
) -> None:
    assert main(["evaluate", str(fold_set)]) == 0
    assert (fold_set / "metrics.json").is_file() and (fold_set / "report.html").is_file()
    # Per-fold scores: each fold's rows scored alone, agreeing with the pooled table.
    import json

    from ich.eval.metrics import weighted_log_loss

    metrics = json.loads((fold_set / "metrics.json").read_text())
    oof = pd.read_parquet(fold_set / "oof_predictions.parquet")
    assert [f["fold"] for f in metrics["folds"]] == [0, 1, 2]
    for f in metrics["folds"]:
        rows = oof[oof["fold"] == f["fold"]]
        assert f["n_slices"] == len(rows)
        expected = weighted_log_loss(rows[list(LABELS)].to_numpy(float),
                                     rows[[f"q_{n}" for n in LABELS]].to_numpy(float))
        assert f["sequence_model"]["weighted_log_loss"] == pytest.approx(expected, rel=1e-9)
    html = (fold_set / "report.html").read_text()
    assert "Per fold" in html and "--all-folds" in html  # the reproduce command is a fold set's
    sub = tmp_path / "sub.csv"
    assert main(["predict", str(fold_set), str(tiny_cache), "--out", str(sub)]) == 0
    frame = pd.read_csv(sub)
    assert len(frame) == 6 * len(SliceCache(tiny_cache))
    from ich.inference import Predictor

    predictor = Predictor.from_run(fold_set)
    assert len(predictor.runs) == 3 and len(predictor.provenance.runs or ()) == 3


def test_fold_set_refuses_retraining_and_resumes_without_flags(
    fold_set: Path, tiny_cache: Path, tiny_overrides: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    best = [run / "checkpoints" / "slice_best.safetensors" for run in fold_runs(fold_set)]
    before = [p.stat().st_mtime_ns for p in best]
    args = ["train", str(tiny_cache), "--out", str(fold_set), "--all-folds", *tiny_overrides]
    assert main(args) == 1
    assert "already holds a run (foldset.json" in capsys.readouterr().err
    assert [p.stat().st_mtime_ns for p in best] == before
    # --resume on a fold set continues it as a fold set (no --all-folds needed): every fold's
    # slice model is already finished, so only the out-of-fold stage runs again.
    assert main(["train", "--resume", str(fold_set), "sequence.epochs=1"]) == 0
    out = capsys.readouterr().out
    assert "fold 3/3: sequence model" in out and "fold set:" in out
    assert [p.stat().st_mtime_ns for p in best] == before
