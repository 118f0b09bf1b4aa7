"""Evaluate a training run: metrics.json, plots and the HTML report from its predictions.

Inputs are the run's out-of-fold predictions (``RUN/oof_predictions.parquet``) or any table with
the same columns (e.g. predictions of a labelled cache). Every model is scored at slice level
(the competition's unit) and at study level (the radiologist's unit: max over slices), next to
the constant base-rate predictor, because a log loss means little without that baseline.

Everything follows the run's own labels (its model spec: the six RSNA labels, a subset, or the
user's names such as one ``hemorrhage``): the metric weighs ``any`` twice only when the run has
it (:func:`ich.labels.label_weights`), and the headline AUC is that of ``any``, of the single
label of a one-label run, or the mean over the labels otherwise (:func:`headline_label`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ich.atomic import atomic_write_text
from ich.errors import CheckpointError, LabelsError
from ich.eval.bootstrap import N_RESAMPLES, bootstrap_intervals
from ich.eval.folds import per_fold_scores
from ich.eval.labelset import headline_auc, headline_label, resolve_labels
from ich.eval.metrics import base_rate_predictions, compute_metrics, study_level
from ich.eval.plots import (
    plot_confusion,
    plot_pr,
    plot_reliability,
    plot_roc,
    plot_training_curves,
)
from ich.eval.result import METRICS_FORMAT, Evaluation
from ich.labels import LABELS

#: Model name in reports -> column prefix in the predictions table.
MODEL_PREFIXES: dict[str, str] = {"slice_model": "p_", "sequence_model": "q_"}
MODEL_TITLES: dict[str, str] = {
    "base_rate": "Base rate (constant)",
    "slice_model": "Slice model (CNN)",
    "sequence_model": "Sequence model (study-level refinement)",
}


def _json_safe(obj: Any) -> Any:
    """NaN/inf -> None so metrics.json is strict JSON (other tools choke on NaN)."""
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def load_predictions(run_dir: Path) -> pd.DataFrame:
    """Read ``RUN/oof_predictions.parquet``; a missing file is a named error, not a traceback."""
    path = run_dir / "oof_predictions.parquet"
    if not path.is_file():
        raise CheckpointError(
            f"{path}: no out-of-fold predictions in this run folder (train first, or pass --data)"
        )
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several kinds for damaged files
        raise CheckpointError(f"{path}: cannot read predictions ({exc})") from exc


def available_models(df: pd.DataFrame, labels: Sequence[str] = LABELS) -> list[str]:
    """Models whose probability columns (one per label) are all present and filled."""
    out = []
    for name, prefix in MODEL_PREFIXES.items():
        cols = [f"{prefix}{label}" for label in labels]
        if all(c in df.columns for c in cols) and df[cols].notna().all(axis=None):
            out.append(name)
    return out


def _labelled_rows(df: pd.DataFrame, labels: Sequence[str]) -> tuple[pd.DataFrame, int]:
    """Rows with every label; unlabelled rows cannot be scored and are counted, not hidden."""
    missing = [label for label in labels if label not in df.columns]
    if missing:
        raise LabelsError(f"predictions lack the true label columns {missing} of the run's "
                          f"labels {list(labels)}")
    ok = df[list(labels)].notna().all(axis=1)
    if not ok.any():
        raise LabelsError("no labelled rows to evaluate (all label columns are empty)")
    return df[ok].reset_index(drop=True), int((~ok).sum())


def _read_train_prevalence(
    run_dir: Path, labels: Sequence[str] = LABELS
) -> dict[str, np.ndarray] | None:
    """Prevalences saved by training (``train_prevalence.json``): the honest baseline.

    Accepted forms: ``{"slice": {label: p}, "study": {label: p}}``, ``{label: p}`` or a list
    of one number per label (slice level only). A file that lacks one of ``labels`` is not
    used (the evaluated rows' prevalence is, and the report says so).
    """
    path = run_dir / "train_prevalence.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None

    def vec(obj: Any) -> np.ndarray | None:
        if isinstance(obj, dict) and all(label in obj for label in labels):
            return np.array([float(obj[label]) for label in labels])
        if isinstance(obj, list) and len(obj) == len(labels):
            return np.array([float(v) for v in obj])
        return None

    out: dict[str, np.ndarray] = {}
    if isinstance(data, dict) and ("slice" in data or "study" in data):
        for level in ("slice", "study"):
            v = vec(data.get(level))
            if v is not None:
                out[level] = v
    elif (v := vec(data)) is not None:
        out["slice"] = v
    return out or None


def _group_column(df: pd.DataFrame) -> str:
    for col in ("study_instance_uid", "series_instance_uid", "patient_id"):
        if col in df.columns:
            return col
    raise LabelsError("predictions lack study_instance_uid (needed for study-level metrics)")


#: Above this many rows × replicates a level's intervals are skipped, with the reason recorded:
#: ~15 s of CPU per model (``benchmarks/bench_bootstrap.py``: ~0.3 µs per row × replicate for
#: the six labels on the 2-core development machine). At 1000
#: replicates that is 50,000 rows: the study level of RSNA-sized sets (~22k studies) always has
#: intervals, the slice level of a 750k-slice set does not.
MAX_BOOTSTRAP_CELLS = 50_000_000


def _score_level(
    y: np.ndarray, probs: dict[str, np.ndarray], base: np.ndarray, threshold: float,
    groups: np.ndarray, n_resamples: int, labels: Sequence[str] = LABELS,
) -> dict[str, Any]:
    """Metrics of the baseline and each model on one level (slices or studies).

    Each model's labels get ``ci95`` (study-resampled bootstrap intervals of AUC, sensitivity
    and specificity, see :mod:`ich.eval.bootstrap`) and the model a ``bootstrap`` block saying
    how they were drawn; ``n_resamples=0`` or a level too large for the budget leaves them out,
    with the reason in ``bootstrap.skipped``.
    """
    out: dict[str, Any] = {
        "base_rate": compute_metrics(
            y, np.clip(base_rate_predictions(base[None], len(y), labels), 0, 1), threshold,
            labels,
        )
    }
    out["base_rate"]["prevalence_used"] = [float(v) for v in base]
    for name, p in probs.items():
        out[name] = compute_metrics(y, p, threshold, labels)
        if n_resamples < 1:
            out[name]["bootstrap"] = {"skipped": "disabled (--bootstrap 0)"}
        elif len(y) * n_resamples > MAX_BOOTSTRAP_CELLS:
            out[name]["bootstrap"] = {
                "skipped": f"{len(y):,} rows × {n_resamples} replicates is over the budget; "
                "the study level has intervals"}
        else:
            boot = bootstrap_intervals(y, p, groups, labels, threshold, n_resamples).to_dict()
            for label, intervals in boot.pop("labels").items():
                out[name]["labels"][label]["ci95"] = intervals
            out[name]["bootstrap"] = boot
    return out


def _headline(levels: dict[str, dict[str, Any]], main: str = "any") -> dict[str, Any]:
    """The numbers a reader wants first: wll per model, ratio to the baseline, the AUC of
    ``main`` (:func:`headline_label`) and of ``any`` (None when the run has no ``any``)."""
    head: dict[str, Any] = {}
    for level, scores in levels.items():
        base_wll = scores["base_rate"]["weighted_log_loss"]
        head[level] = {
            name: {
                "weighted_log_loss": m["weighted_log_loss"],
                "ratio_to_base_rate": m["weighted_log_loss"] / base_wll if base_wll > 0 else None,
                "auc_any": m["labels"]["any"]["auc"] if "any" in m["labels"] else None,
                "auc": headline_auc({k: v["auc"] for k, v in m["labels"].items()}, main),
            }
            for name, m in scores.items()
        }
    return head


def _make_plots(
    report_dir: Path,
    y: dict[str, np.ndarray],
    probs: dict[str, dict[str, np.ndarray]],
    threshold: float,
    run_dir: Path | None = None,
    labels: Sequence[str] = LABELS,
) -> dict[str, str]:
    """All per-level, per-model plots, one curve or panel per label of the run; returns
    {key: file name relative to the output folder}.

    The training curves come from ``run_dir`` (default: the report folder's parent).
    """
    figs: dict[str, str] = {}
    for level, by_model in probs.items():
        for name, p in by_model.items():
            what = f"{MODEL_TITLES[name]}, {level} level"
            for kind, fn in (("roc", plot_roc), ("pr", plot_pr), ("reliability", plot_reliability)):
                path = report_dir / f"{kind}_{level}_{name}.png"
                fn(
                    y[level],
                    p,
                    path,
                    title=f"{kind.upper() if kind != 'reliability' else 'Reliability'}: {what}",
                    labels=labels,
                )
                figs[f"{kind}/{level}/{name}"] = f"report/{path.name}"
            path = report_dir / f"confusion_{level}_{name}.png"
            plot_confusion(y[level], p, path, threshold, title=f"Confusion: {what}",
                           labels=labels)
            figs[f"confusion/{level}/{name}"] = f"report/{path.name}"
    curves = plot_training_curves(
        (run_dir or report_dir.parent) / "metrics.jsonl", report_dir / "training_curves.png"
    )
    if curves is not None:
        figs["training_curves"] = f"report/{curves.name}"
    return figs


def _level_arrays(
    df: pd.DataFrame, models: list[str], group_col: str, labels: Sequence[str] = LABELS
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]], np.ndarray]:
    """Labels and per-model probabilities at slice and study level (max over a study's slices)."""
    groups = df[group_col].astype(str).to_numpy()
    y_slice = df[list(labels)].to_numpy(dtype=np.float64)
    p_slice = {
        m: df[[f"{MODEL_PREFIXES[m]}{lab}" for lab in labels]].to_numpy(np.float64) for m in models
    }
    y_study, _, study_ids = study_level(y_slice, y_slice, groups, labels)
    p_study = {m: study_level(y_slice, p, groups, labels)[1] for m, p in p_slice.items()}
    return {"slice": y_slice, "study": y_study}, {"slice": p_slice, "study": p_study}, study_ids


def _baselines(
    run_dir: Path, y_slice: np.ndarray, y_study: np.ndarray, labels: Sequence[str] = LABELS
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Base-rate prevalences per level and where they come from.

    Training prevalences are the honest baseline (they are what a model without images would
    know); without them the evaluated rows' own prevalence is used, and the report says so.
    """
    train_prev = _read_train_prevalence(run_dir, labels) or {}
    own = {"slice": y_slice.mean(0), "study": y_study.mean(0)}
    base = {level: train_prev.get(level, own[level]) for level in own}
    source = {
        level: "training rows (train_prevalence.json)"
        if level in train_prev
        else "evaluated rows (no train_prevalence.json)"
        for level in own
    }
    return base, source


def evaluate_run(
    run_dir: Path,
    predictions: pd.DataFrame | None = None,
    threshold: float = 0.5,
    *,
    plots: bool = True,
    source: str | None = None,
    n_resamples: int = N_RESAMPLES,
    out_dir: Path | None = None,
    overlap: dict[str, Any] | None = None,
    data: Path | None = None,
    labels: Sequence[str] | None = None,
) -> Evaluation:
    """Score a run and write ``OUT/metrics.json``, ``OUT/report/*.png`` and ``OUT/report.html``.

    Args:
        run_dir: The run folder (config, logs, predictions).
        predictions: A predictions table with the columns of ``oof_predictions.parquet``; when
            None, that file is read.
        threshold: Decision threshold for sensitivity/specificity/precision/accuracy.
        plots: Draw the PNGs (the slow part); without them the report has tables only.
        source: Where ``predictions`` come from, in words, for the report (e.g. the cache).
        n_resamples: Bootstrap replicates of the 95 % intervals (resampling studies); 0: none.
        out_dir: Where the outputs go (default ``run_dir``: the run's out-of-fold report).
            The run folder is still where the configuration, training log and prevalences are
            read from.
        overlap: What :func:`ich.eval.overlap.training_overlap` found, recorded in
            metrics.json and shown on top of the report.
        data: The cache the predictions come from (recorded for the reproduce command).
        labels: The labels to score (default the run's, from its model spec; see
            :func:`resolve_labels`).

    Returns:
        The :class:`~ich.eval.result.Evaluation` whose :meth:`~ich.eval.result.Evaluation.to_json`
        is ``metrics.json``, with the report's path.
    """
    from ich.eval.report import write_report

    run_dir = Path(run_dir)
    if source is None:
        source = "oof_predictions.parquet" if predictions is None else "predictions given by caller"
    df = load_predictions(run_dir) if predictions is None else predictions
    names = resolve_labels(run_dir, df, labels)
    df, n_unlabelled = _labelled_rows(df, names)
    models = available_models(df, names)
    group_col = _group_column(df)
    y, probs, study_ids = _level_arrays(df, models, group_col, names)
    y_slice, y_study = y["slice"], y["study"]
    p_slice, p_study = probs["slice"], probs["study"]
    base, base_source = _baselines(run_dir, y_slice, y_study, names)
    groups = df[group_col].astype(str).to_numpy()
    levels = {
        "slice": _score_level(y_slice, p_slice, base["slice"], threshold, groups, n_resamples,
                              names),
        "study": _score_level(y_study, p_study, base["study"], threshold, study_ids,
                              n_resamples, names),
    }
    out_dir = run_dir if out_dir is None else Path(out_dir)
    figures = (_make_plots(out_dir / "report", y, probs, threshold, run_dir, names)
               if plots else {})
    main = headline_label(names)
    result: dict[str, Any] = {
        "format": METRICS_FORMAT,
        "source": source,
        "threshold": float(threshold),
        "labels": list(names),
        "headline_label": main,
        "models": models,
        "n_slices": len(y_slice),
        "n_unlabelled_slices_skipped": n_unlabelled,
        "n_studies": len(study_ids),
        "study_key": group_col,
        "baseline_source": base_source,
        "headline": _headline(levels, main),
        "levels": levels,
        "figures": figures,
    }
    if overlap is not None:
        result["overlap"] = overlap
    if data is not None:
        result["data"] = str(data)
    folds = per_fold_scores(df, models, MODEL_PREFIXES, names, main)
    if folds:
        result["folds"] = folds
    evaluation = Evaluation.from_json(_json_safe(result))
    metrics = evaluation.to_json()
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2, allow_nan=False))
    return replace(evaluation, report=write_report(run_dir, metrics, out_dir))
