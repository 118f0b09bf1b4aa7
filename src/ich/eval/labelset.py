"""Which labels an evaluation scores: the run's own, found without loading a model.

A run predicts the labels of the data it was trained on (:attr:`ich.models.spec.ModelSpec.labels`):
the six RSNA labels, a subset such as three subtypes, or the user's own names such as one
``hemorrhage``. Evaluation, thresholds and reports take them from the run's model spec, then
from the predictions table, and fall back to the six RSNA labels only for tables that carry them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ich.labels import LABELS, check_label_names


def labels_of_columns(df: pd.DataFrame) -> tuple[str, ...]:
    """The labels a predictions table carries: each ``<label>`` column with a ``p_<label>``
    column beside it, in the table's order (the run's order: training writes them so)."""
    return tuple(str(c)[2:] for c in df.columns
                 if str(c).startswith("p_") and str(c)[2:] in df.columns)


def resolve_labels(
    run_dir: Path, df: pd.DataFrame, labels: Sequence[str] | None = None
) -> tuple[str, ...]:
    """The labels to score: ``labels`` when given, else the run's (its model spec), else the
    predictions table's own (a folder with only ``oof_predictions.parquet``), else the six.

    Why the spec first: the out-of-fold table of a one-label run holds one label; reading
    :data:`~ich.labels.LABELS` there would look for five columns that do not exist.
    """
    from ich.runs.load import run_labels  # reads a spec only; keeps this module light

    if labels is None:
        labels = run_labels(run_dir) or labels_of_columns(df) or LABELS
    return check_label_names(labels, str(run_dir))


def headline_label(labels: Sequence[str]) -> str:
    """The label whose AUC the headline shows: ``any`` when the run has it, the label of a
    one-label run, else ``"mean"`` (the mean AUC over the labels that have one)."""
    if "any" in labels:
        return "any"
    return str(labels[0]) if len(labels) == 1 else "mean"


def headline_auc(aucs: Mapping[str, float | None], main: str) -> float | None:
    """The headline AUC from per-label AUCs (None where a label has one class only): that of
    ``main`` (:func:`headline_label`), or for ``"mean"`` the mean of the defined ones."""
    if main != "mean":
        return aucs[main]
    defined = [a for a in aucs.values() if a is not None]
    return float(np.mean(defined)) if defined else None
