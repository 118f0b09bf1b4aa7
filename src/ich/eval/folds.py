"""Per-fold scores of out-of-fold predictions (a fold set, ``ich train --all-folds``).

Why: the pooled out-of-fold score of a fold set can hide one fold that failed (a diverged
run, an unlucky split); the spread over folds says how far the pooled number can be trusted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ich.eval.labelset import headline_auc
from ich.eval.metrics import weighted_log_loss


def _auc(y: np.ndarray, p: np.ndarray, labels: Sequence[str], main: str) -> float | None:
    """ROC AUC of the headline label (:func:`headline_auc`); only the labels it needs are
    scored."""
    from sklearn.metrics import roc_auc_score

    wanted = labels if main == "mean" else [main]
    aucs = {name: (float(roc_auc_score(y[:, j], p[:, j]))
                   if len(np.unique(y[:, j])) == 2 else None)
            for j, name in enumerate(labels) if name in wanted}
    return headline_auc(aucs, main)


def per_fold_scores(
    df: pd.DataFrame, models: Sequence[str], prefixes: Mapping[str, str],
    labels: Sequence[str], main: str,
) -> list[dict[str, Any]]:
    """Slice-level weighted log loss and headline AUC of each model on each fold's rows.

    Args:
        df: Out-of-fold predictions with a ``fold`` column, the label columns and the models'
            probability columns (``<prefix><label>``).
        models: The models present (e.g. ``slice_model``, ``sequence_model``).
        prefixes: Probability column prefix of each model.
        labels: The run's labels.
        main: The headline label (``ich.eval.labelset.headline_label``).

    Returns:
        One entry per fold, ``{"fold", "n_slices", "n_patients", <model>: {"weighted_log_loss",
        "auc"}}``; empty unless the table holds at least two folds.
    """
    if "fold" not in df.columns or df["fold"].nunique() < 2:
        return []
    out = []
    for fold, rows in df.groupby("fold", sort=True):
        y = rows[list(labels)].to_numpy(dtype=np.float64)
        entry: dict[str, Any] = {
            "fold": int(str(fold)),
            "n_slices": len(rows),
            "n_patients": int(rows["patient_id"].nunique()) if "patient_id" in rows else None,
        }
        for model in models:
            p = rows[[f"{prefixes[model]}{n}" for n in labels]].to_numpy(dtype=np.float64)
            entry[model] = {"weighted_log_loss": weighted_log_loss(y, p, labels=labels),
                            "auc": _auc(y, p, labels, main)}
        out.append(entry)
    return out
