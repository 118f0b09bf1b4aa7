"""Metrics on arrays: the RSNA 2019 weighted log loss and per-label losses.

Pure numpy so that training, evaluation and tests all compute the same number.
"""

from __future__ import annotations

import numpy as np

from ich.labels import LABEL_WEIGHTS, LABELS

#: Clip used by the competition's evaluation.
EVAL_EPS = 1e-7


def _check(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if t.shape != p.shape or t.ndim != 2 or t.shape[1] != len(LABELS):
        raise ValueError(f"y_true and y_pred must both be (N, {len(LABELS)}); got {t.shape}, {p.shape}")
    return t, p


def per_label_log_loss(
    y_true: np.ndarray, y_pred: np.ndarray, eps: float = EVAL_EPS
) -> np.ndarray:
    """Binary log loss of each label, averaged over rows: (N, 6), (N, 6) -> (6,)."""
    t, p = _check(y_true, y_pred)
    p = np.clip(p, eps, 1 - eps)
    return -(t * np.log(p) + (1 - t) * np.log(1 - p)).mean(axis=0)


def weighted_log_loss(y_true: np.ndarray, y_pred: np.ndarray, eps: float = EVAL_EPS) -> float:
    """The RSNA 2019 metric: per-label log losses averaged with weights any=2, subtypes=1."""
    return float(np.average(per_label_log_loss(y_true, y_pred, eps), weights=LABEL_WEIGHTS))
