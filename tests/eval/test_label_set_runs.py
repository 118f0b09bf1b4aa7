"""Everything downstream of a run follows the run's labels: predict, evaluate, thresholds,
export, heatmaps and fidelity for a one-label run and a three-subtype run.

The runs are untrained (``make_run``): the tests check shapes, names and the metric's
arithmetic, not accuracy. Images come from the six-label ``tiny_cache`` (and, for scoring the
one-label run, a ``hemorrhage`` cache built from the same phantom).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import log_loss

from ich.cli import main
from ich.errors import CheckpointError, UnknownLabelError
from ich.eval.fidelity import explanation_fidelity, unmapped_labels
from ich.eval.plots import confusion_grid
from ich.eval.thresholds import load_thresholds, thresholds_from_oof
from ich.inference import Predictor
from ich.labels import LABELS, label_weights
from ich.predict import predict_cache
from ich.runs.checkpoint import read_spec

ONE = ("hemorrhage",)
SUBSET = ("intraparenchymal", "epidural", "subarachnoid")

MakeRun = Callable[..., Path]


@pytest.fixture(scope="module")
def one_run(make_run: MakeRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run: Path = make_run(tmp_path_factory.mktemp("one") / "run", ONE, seed=1)
    return run


@pytest.fixture(scope="module")
def subset_run(make_run: MakeRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run: Path = make_run(tmp_path_factory.mktemp("subset") / "run", SUBSET, seed=2)
    return run


@pytest.fixture(scope="module")
def one_cache(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny_cohort`` prepared with a one-column label file: ``hemorrhage`` = any bleed."""
    from ich.data.build import build_cache
    from ich.data.preprocess import PreprocessSpec
    from ich.labels import read_labels

    root = tmp_path_factory.mktemp("one_cache")
    wide = read_labels(tiny_cohort / "labels.csv")
    csv = root / "hemorrhage.csv"
    pd.DataFrame({"ID": wide.index, "hemorrhage": wide["any"].to_numpy()}).to_csv(
        csv, index=False)
    build_cache(tiny_cohort / "images", root / "cache", labels_csv=csv,
                spec=PreprocessSpec(size=64), workers=1, progress=False)
    return root / "cache"


def _predict(run: Path, data: Path, out: Path, *extra: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    preds = out.with_suffix(".parquet")
    args = ["predict", str(run), str(data), "--out", str(out), "--predictions", str(preds)]
    assert main([*args, *extra]) == 0
    return pd.read_csv(out), pd.read_parquet(preds)


@pytest.fixture(scope="module")
def subset_predicted(
    subset_run: Path, tiny_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A copy of ``subset_run`` with out-of-fold predictions (the tiny cache's, standing in)
    and thresholds chosen on them, then ``ich predict --binary`` of the tiny cache into
    ``RUN/sub.csv`` (+ ``sub.parquet``, ``sub.series.csv``, ``sub.binary.csv``)."""
    import shutil

    run = tmp_path_factory.mktemp("subset_predicted") / "run"
    shutil.copytree(subset_run, run)
    predict_cache([run], tiny_cache, progress=False).to_parquet(run / "oof_predictions.parquet")
    thresholds_from_oof(run)  # the labels come from the run's spec
    _predict(run, tiny_cache, run / "sub.csv", "--binary")
    return run


def _rows_per_image(submission: pd.DataFrame, labels: tuple[str, ...]) -> None:
    """Exactly one row per image and label, the run's labels in the run's order."""
    image, label = (submission["ID"].str.rsplit("_", n=1).str[i] for i in (0, 1))
    assert (image.value_counts() == len(labels)).all()
    assert label.iloc[: len(labels)].tolist() == list(labels)
    assert set(label) == set(labels)


def test_predict_one_label_run_on_a_six_label_cache(
    one_run: Path, tiny_cache: Path, tmp_path: Path
) -> None:
    submission, table = _predict(one_run, tiny_cache, tmp_path / "sub.csv", "--tta", "2")
    _rows_per_image(submission, ONE)
    assert len(submission) == len(table)  # N images x 1 label
    assert {"p_hemorrhage", "q_hemorrhage"} <= set(table.columns)
    # The cache has no "hemorrhage" truth: none is made up, and the six are not predicted.
    assert "hemorrhage" not in table.columns
    assert not [c for c in table.columns if c.startswith(("p_", "q_")) and c[2:] in LABELS]
    series = pd.read_csv(tmp_path / "sub.series.csv")
    assert series.columns[-1] == "hemorrhage" and "any" not in series.columns
    assert series["hemorrhage"].between(0, 1).all()


def test_predict_subset_run_copies_the_truth_it_has(
    subset_predicted: Path, tiny_cache: Path
) -> None:
    run = subset_predicted
    submission, table = pd.read_csv(run / "sub.csv"), pd.read_parquet(run / "sub.parquet")
    _rows_per_image(submission, SUBSET)
    assert len(submission) == 3 * len(table)
    from ich.data.cache import SliceCache

    cache = SliceCache(tiny_cache)
    for name in SUBSET:  # truth columns are the cache's own values for the run's labels
        want = cache.labels[:, cache.label_names.index(name)]
        np.testing.assert_array_equal(table[name].to_numpy(), want)
    assert "any" not in table.columns and "p_any" not in table.columns
    assert list(pd.read_csv(run / "sub.series.csv").columns[-3:]) == list(SUBSET)


def test_thresholds_and_binary_decisions_follow_the_runs_labels(subset_predicted: Path) -> None:
    run = subset_predicted
    cuts = load_thresholds(run)
    assert list(cuts) == list(SUBSET)
    oof = pd.read_parquet(run / "oof_predictions.parquet")
    assert not [c for c in oof.columns if c.endswith("any")]
    with pytest.raises(CheckpointError, match="hemorrhage"):
        thresholds_from_oof(run, ONE)
    probs = pd.read_csv(run / "sub.csv")
    binary = pd.read_csv(run / "sub.binary.csv")
    assert binary["ID"].tolist() == probs["ID"].tolist()
    label = probs["ID"].str.rsplit("_", n=1).str[-1]
    assert binary["Label"].tolist() == (probs["Label"] >= label.map(cuts)).astype(int).tolist()


@pytest.mark.slow  # draws every plot of two models at two levels (~5 s)
def test_evaluate_subset_run_on_a_cache(
    subset_predicted: Path, tiny_cache: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "eval"
    args = ["evaluate", str(subset_predicted), "--data", str(tiny_cache), "--out", str(out),
            "--bootstrap", "0"]
    assert main(args) == 0
    assert "mean AUC" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["labels"] == list(SUBSET) and metrics["headline_label"] == "mean"
    seq = metrics["levels"]["slice"]["sequence_model"]
    assert list(seq["labels"]) == list(SUBSET)
    # Without "any" every label weighs 1: the metric is the plain mean of the log losses.
    table = pd.read_parquet(subset_predicted / "sub.parquet")  # the same model on the same cache
    y = table[list(SUBSET)].to_numpy()
    q = table[[f"q_{n}" for n in SUBSET]].to_numpy()
    want = np.mean([log_loss(y[:, j], q[:, j], labels=[0, 1]) for j in range(3)])
    assert seq["weighted_log_loss"] == pytest.approx(want, rel=1e-5)
    for kind in ("roc", "pr", "reliability", "confusion"):
        assert (out / metrics["figures"][f"{kind}/study/sequence_model"]).is_file()
    html = (out / "report.html").read_text()
    assert "epidural" in html and "subdural" not in html and "labels weighed equally" in html


@pytest.mark.slow  # evaluates twice with plots (~5 s)
def test_evaluate_one_label_run(
    one_run: Path, one_cache: Path, tiny_cache: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    import shutil

    # A cache without the run's label is refused with the missing label named.
    assert main(["evaluate", str(one_run), "--data", str(tiny_cache), "--out",
                 str(tmp_path / "no")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ich evaluate: error:") and "lack the run's label(s) hemorrhage" in err
    assert not (tmp_path / "no").exists()
    # The run's out-of-fold report path: labels from the spec, not from LABELS.
    run = tmp_path / "run"
    shutil.copytree(one_run, run)
    table = predict_cache([run], one_cache, progress=False)
    table.to_parquet(run / "oof_predictions.parquet")
    assert main(["evaluate", str(run), "--bootstrap", "0"]) == 0
    assert "AUC hemorrhage" in capsys.readouterr().out
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["labels"] == ["hemorrhage"] and metrics["headline_label"] == "hemorrhage"
    y, q = table["hemorrhage"].to_numpy(), table["q_hemorrhage"].to_numpy()
    assert 0 < y.sum() < len(y)
    for level, name in (("slice", "sequence_model"), ("slice", "slice_model")):
        got = metrics["levels"][level][name]
        prob = q if name == "sequence_model" else table["p_hemorrhage"].to_numpy()
        assert got["weighted_log_loss"] == pytest.approx(log_loss(y, prob), rel=1e-5)
        assert metrics["headline"][level][name]["auc"] == got["labels"]["hemorrhage"]["auc"]
        assert metrics["headline"][level][name]["auc_any"] is None
    html = (run / "report.html").read_text()
    assert "AUC hemorrhage" in html and "subdural" not in html
    assert "one label, hemorrhage (lower is better)" in html  # its wll caption
    # Scoring a cache that has the label works too, into a new folder (plots drawn above).
    monkeypatch.setattr("ich.eval.evaluate._make_plots", lambda *a, **k: {})
    assert main(["evaluate", str(run), "--data", str(one_cache), "--bootstrap", "0"]) == 0
    got = json.loads((run / "evaluations" / "cache" / "metrics.json").read_text())
    assert got["levels"]["slice"]["sequence_model"]["weighted_log_loss"] == pytest.approx(
        metrics["levels"]["slice"]["sequence_model"]["weighted_log_loss"], rel=1e-5)


def test_confusion_panels_follow_the_label_count() -> None:
    assert confusion_grid(1) == (1, 1)
    assert confusion_grid(3) == (1, 3)
    assert confusion_grid(4) == (2, 3)
    assert confusion_grid(6) == (2, 3)
    assert label_weights(ONE).tolist() == [1.0]


@pytest.mark.parametrize(("run_fixture", "fmt"), [
    ("one_run", "torchscript"), ("one_run", "onnx"), ("subset_run", "onnx")])
def test_export_runs_of_other_label_sets(
    run_fixture: str, fmt: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    run: Path = request.getfixturevalue(run_fixture)
    labels = read_spec(run / "checkpoints" / "slice_best.safetensors").labels
    out = tmp_path / f"slice.{fmt}"
    assert main(["export", str(run), "--format", fmt, "--out", str(out)]) == 0
    meta = json.loads((tmp_path / f"slice.{fmt}.json").read_text())
    assert meta["labels"] == list(labels) and meta["parity_max_abs_diff"] <= 1e-3
    x = torch.rand(2, *meta["inputs"]["x"][1:], generator=torch.Generator().manual_seed(5))
    if fmt == "onnx":
        import onnxruntime as ort

        logits = ort.InferenceSession(str(out)).run(None, {"x": x.numpy()})[1]
    else:
        logits = torch.jit.load(str(out))(x)[1].detach().numpy()
    assert logits.shape == (2, len(labels))


def test_heatmap_labels_are_the_runs(one_run: Path, tiny_cohort: Path) -> None:
    from ich.dicom.io import read_slice

    predictor = Predictor.from_run(one_run)
    assert predictor.labels == ONE
    hu = read_slice(sorted((tiny_cohort / "images").glob("*.dcm"))[0]).hu
    heat = predictor.heatmap(hu, "hemorrhage")
    assert heat.shape == hu.shape and heat.min() >= 0 and heat.max() <= 1
    with pytest.raises(UnknownLabelError, match="its labels \\(hemorrhage\\)"):
        predictor.heatmap(hu, "any")


def test_fidelity_scores_mapped_labels_and_skips_the_others(
    subset_run: Path, tiny_cohort: Path
) -> None:
    assert unmapped_labels(ONE) == ["hemorrhage"] and unmapped_labels(SUBSET) == []
    predictor = Predictor.from_run(subset_run)
    rows = explanation_fidelity(predictor.heatmap, tiny_cohort, predictor.offsets, 1,
                                labels=predictor.labels)
    assert rows and {r.label for r in rows} <= set(SUBSET)
    assert explanation_fidelity(predictor.heatmap, tiny_cohort, predictor.offsets, 1,
                                labels=ONE) == []


def test_binary_refuses_thresholds_of_other_label_sets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = []
    for name, labels in (("a", ONE), ("b", SUBSET)):
        run = tmp_path / name
        run.mkdir()
        cuts = {n: {"threshold": 0.5} for n in labels}
        (run / "thresholds.json").write_text(json.dumps({"labels": cuts}))
        runs.append(str(run))
    (tmp_path / "in").mkdir()
    out = tmp_path / "sub.csv"
    assert main(["predict", *runs, str(tmp_path / "in"), "--out", str(out), "--binary"]) == 1
    err = capsys.readouterr().err
    assert "combine runs of one label set" in err and "hemorrhage" in err and not out.exists()
