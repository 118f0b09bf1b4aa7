"""Metrics on arrays: the RSNA 2019 weighted log loss, per-label losses, AUC/AP, operating
points, calibration, the base-rate baseline and study-level aggregation.

Pure numpy so that training, evaluation and tests all compute the same number.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ich.labels import LABELS, label_weights

#: Clip used by the competition's evaluation.
EVAL_EPS = 1e-7


def _check(
    y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str] = LABELS
) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if t.shape != p.shape or t.ndim != 2 or t.shape[1] != len(labels):
        raise ValueError(
            f"y_true and y_pred must both be (N, {len(labels)}) for labels {list(labels)}; "
            f"got {t.shape}, {p.shape}"
        )
    return t, p


def per_label_log_loss(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    eps: float = EVAL_EPS,
    labels: Sequence[str] = LABELS,
) -> np.ndarray:
    """Binary log loss of each label, averaged over rows: (N, L), (N, L) -> (L,)."""
    t, p = _check(y_true, y_pred, labels)
    p = np.clip(p, eps, 1 - eps)
    return -(t * np.log(p) + (1 - t) * np.log(1 - p)).mean(axis=0)


def weighted_log_loss(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    eps: float = EVAL_EPS,
    labels: Sequence[str] = LABELS,
) -> float:
    """The RSNA 2019 metric: per-label log losses averaged with weights any=2, subtypes=1.

    For a run with other labels (``labels``), ``any`` weighs 2 only when present
    (:func:`ich.labels.label_weights`).
    """
    per_label = per_label_log_loss(y_true, y_pred, eps, labels)
    return float(np.average(per_label, weights=label_weights(labels)))


#: Sensitivity the "high-sensitivity" operating point must reach (triage use: miss few bleeds).
TARGET_SENSITIVITY = 0.95
#: Number of equal-width probability bins of the expected calibration error.
ECE_BINS = 10


def _binary_counts(t: np.ndarray, pred: np.ndarray) -> dict[str, float | None]:
    """Sensitivity, specificity, precision and accuracy of hard predictions for one label.

    A ratio whose denominator is zero (e.g. sensitivity with no positives) is None, so a
    report shows "n/a" instead of a misleading 0 or 1.
    """
    tp = float(np.sum((pred == 1) & (t == 1)))
    tn = float(np.sum((pred == 0) & (t == 0)))
    fp = float(np.sum((pred == 1) & (t == 0)))
    fn = float(np.sum((pred == 0) & (t == 1)))

    def ratio(a: float, b: float) -> float | None:
        return a / b if b > 0 else None

    return {
        "sensitivity": ratio(tp, tp + fn),
        "specificity": ratio(tn, tn + fp),
        "precision": ratio(tp, tp + fp),
        "accuracy": ratio(tp + tn, tp + tn + fp + fn),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def threshold_for_sensitivity(
    t: np.ndarray, p: np.ndarray, target: float = TARGET_SENSITIVITY
) -> float | None:
    """The highest threshold whose sensitivity (``p >= threshold``) reaches ``target``.

    The highest such threshold is the one with the best specificity among those that meet the
    sensitivity goal. None when the label has no positives (no sensitivity to reach).
    """
    pos = np.sort(p[t == 1])[::-1]
    if pos.size == 0:
        return None
    # Predicting p >= pos[k-1] catches at least the k highest-scored positives.
    k = int(np.ceil(target * pos.size - 1e-9))
    return float(pos[max(k, 1) - 1])


def expected_calibration_error(t: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error: sum over equal-width bins of |mean(p) - mean(t)| × bin share.

    Log loss mixes discrimination and calibration; ECE isolates the latter, which matters when
    probabilities are read as risks rather than ranked.
    """
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1], right=False), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        sel = idx == b
        if sel.any():
            total += sel.mean() * abs(float(p[sel].mean()) - float(t[sel].mean()))
    return float(total)


def reliability_bins(t: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> dict[str, list[float]]:
    """Per-bin mean prediction, observed frequency and count (for the reliability diagram)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1], right=False), 0, bins - 1)
    out: dict[str, list[float]] = {"mean_pred": [], "frac_pos": [], "count": []}
    for b in range(bins):
        sel = idx == b
        if sel.any():
            out["mean_pred"].append(float(p[sel].mean()))
            out["frac_pos"].append(float(t[sel].mean()))
            out["count"].append(float(sel.sum()))
    return out


def _label_metrics(t: np.ndarray, p: np.ndarray, ll: float, threshold: float) -> dict[str, Any]:
    """Every metric of one label; AUC/AP are None (with a note) when only one class is present."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    n_pos = int(t.sum())
    single = n_pos == 0 or n_pos == t.size
    out: dict[str, Any] = {
        "log_loss": ll,
        "n": int(t.size),
        "n_positive": n_pos,
        "prevalence": float(t.mean()) if t.size else None,
        "auc": None if single else float(roc_auc_score(t, p)),
        "ap": None if single else float(average_precision_score(t, p)),
        "note": "only one class present: AUC and AP undefined" if single else "",
        "ece": expected_calibration_error(t, p),
        "at_threshold": {
            "threshold": float(threshold),
            **_binary_counts(t, (p >= threshold).astype(int)),
        },
    }
    thr95 = threshold_for_sensitivity(t, p)
    if thr95 is None:
        out["at_95_sensitivity"] = {"threshold": None, "note": "no positives"}
    else:
        out["at_95_sensitivity"] = {
            "threshold": thr95,
            **_binary_counts(t, (p >= thr95).astype(int)),
        }
    return out


def compute_metrics(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    threshold: float = 0.5,
    labels: Sequence[str] = LABELS,
) -> dict[str, Any]:
    """All evaluation metrics of a (N, L) prediction, columns in ``labels`` order.

    Args:
        y_true: (N, L) 0/1 labels.
        y_prob: (N, L) probabilities.
        threshold: Decision threshold for the sensitivity/specificity/precision/accuracy block.
        labels: The run's label names (default the six RSNA labels).

    Returns:
        ``{"n", "weighted_log_loss", "threshold", "labels": {label: {...}}}``; per label:
        ``log_loss, auc, ap, ece, n, n_positive, prevalence, note`` and two operating points,
        ``at_threshold`` and ``at_95_sensitivity``, each ``{threshold, sensitivity,
        specificity, precision, accuracy, tp, fp, tn, fn}``.
        JSON-serialisable (floats, ints, None, str).
    """
    t, p = _check(y_true, y_prob, labels)
    if t.shape[0] == 0:
        raise ValueError("cannot compute metrics on zero rows")
    ll = per_label_log_loss(t, p, labels=labels)
    per_label = {
        name: _label_metrics(t[:, j], p[:, j], float(ll[j]), threshold)
        for j, name in enumerate(labels)
    }
    return {
        "n": int(t.shape[0]),
        "weighted_log_loss": weighted_log_loss(t, p, labels=labels),
        "threshold": float(threshold),
        "labels": per_label,
    }


def base_rate_predictor(y_train: np.ndarray, labels: Sequence[str] = LABELS) -> np.ndarray:
    """Per-label prevalence (L,): the constant predictor every model must beat.

    Its log loss is the entropy of the labels; a model's ratio to it says how much the images
    taught the model beyond the class frequencies.
    """
    t = np.asarray(y_train, dtype=np.float64)
    if t.ndim != 2 or t.shape[1] != len(labels) or t.shape[0] == 0:
        raise ValueError(f"y_train must be (N>0, {len(labels)}); got {t.shape}")
    return np.asarray(np.nanmean(t, axis=0))


def base_rate_predictions(
    y_train: np.ndarray, n: int, labels: Sequence[str] = LABELS
) -> np.ndarray:
    """The base-rate predictor repeated for ``n`` rows: (n, L)."""
    return np.tile(base_rate_predictor(y_train, labels), (n, 1))


def study_level(
    y: np.ndarray,
    p: np.ndarray,
    groups: np.ndarray | list[str],
    labels: Sequence[str] = LABELS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Aggregate slices to studies by taking the max over each study's slices.

    A study is positive for a label when any of its slices is, which is how a radiologist reads
    a study; the max of slice probabilities is the matching score.

    Args:
        y: (N, L) slice labels.
        p: (N, L) slice probabilities.
        groups: (N,) study id per slice.
        labels: The run's label names, one per column (default the six RSNA labels).

    Returns:
        (Y (S, L), P (S, L), group_ids (S,)) with studies in sorted id order.
    """
    t, q = _check(y, p, labels)
    g = np.asarray(groups)
    if g.shape[0] != t.shape[0]:
        raise ValueError(f"groups has {g.shape[0]} rows, y has {t.shape[0]}")
    ids, inverse = np.unique(g, return_inverse=True)
    big_y = np.full((ids.size, t.shape[1]), -np.inf)
    big_p = np.full((ids.size, t.shape[1]), -np.inf)
    np.maximum.at(big_y, inverse, t)
    np.maximum.at(big_p, inverse, q)
    return big_y, big_p, ids
