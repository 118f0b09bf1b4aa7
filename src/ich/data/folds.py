"""Cross-validation folds: grouped by patient, stratified over the six labels.

Patients recur across studies in RSNA (and in the phantom): a patient in two folds leaks their
anatomy into validation and makes the out-of-fold embeddings of the study model optimistic. Rare
subtypes (epidural: 0.4% of slices) must still appear in every fold, or a fold's validation loss
says nothing about them. Iterative stratification (Sechidis et al. 2011, package
``iterative-stratification``) balances all six labels at once on patient-level label vectors.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ich.errors import ConfigError
from ich.labels import LABELS


def _patient_labels(
    catalog: pd.DataFrame, patients: pd.Index, labels: Sequence[str]
) -> np.ndarray | None:
    """(P, K) int: 1 where any slice of the patient is positive; None when nothing is labelled."""
    cols = [c for c in labels if c in catalog.columns]
    if not cols or len(cols) != len(labels):
        return None
    values = catalog[cols].astype("float64")
    if values.isna().all().all():
        return None
    per_patient = values.fillna(0.0).groupby(catalog["patient_id"].to_numpy()).max()
    return (per_patient.reindex(patients).to_numpy() > 0.5).astype(np.int64)


def _group_only(n_patients: int, k: int, seed: int) -> np.ndarray:
    """Fold per patient without labels: a seeded shuffle dealt round-robin (sizes differ <= 1)."""
    order = np.random.default_rng(seed).permutation(n_patients)
    folds = np.empty(n_patients, dtype=np.int64)
    folds[order] = np.arange(n_patients) % k
    return folds


def _stratified(y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold per patient by multilabel iterative stratification on (P, K) patient labels."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    if y.shape[1] == 1:  # one label: its complement makes the multilabel indicator it wants
        y = np.hstack([y, 1 - y])
    folds = np.full(len(y), -1, dtype=np.int64)
    splitter = MultilabelStratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for fold, (_, val) in enumerate(splitter.split(np.zeros((len(y), 1)), y)):
        folds[val] = fold
    return folds


def _fill_empty_folds(folds: np.ndarray, k: int) -> np.ndarray:
    """Move one patient from the largest fold into each empty fold (tiny, skewed cohorts)."""
    folds = folds.copy()
    for fold in range(k):
        counts = np.bincount(folds, minlength=k)
        if counts[fold] == 0:
            donor = int(np.argmax(counts))
            folds[np.flatnonzero(folds == donor)[0]] = fold
    return folds


def make_folds(
    catalog: pd.DataFrame, k: int, seed: int, labels: Sequence[str] = LABELS
) -> pd.Series:
    """Assign every catalog row to one of ``k`` folds, keeping each patient in one fold.

    Args:
        catalog: One row per slice with ``patient_id`` and (optionally) the ``labels`` columns;
            a catalog without them (or all NaN) gets folds grouped by patient only.
        k: Number of folds (>= 2, <= number of patients).
        seed: The same seed and catalog give the same folds.
        labels: The label columns to stratify on (the cache's label names).

    Returns:
        int64 Series named ``"fold"`` aligned with ``catalog.index``, values 0..k-1.

    Raises:
        ConfigError: No ``patient_id`` column, missing patient ids, ``k < 2``, or more folds than
            patients.
    """
    if "patient_id" not in catalog.columns:
        raise ConfigError("make_folds needs a 'patient_id' column to keep patients in one fold")
    if catalog["patient_id"].isna().any():
        raise ConfigError("make_folds: some rows have no patient_id; fix the catalog first")
    if k < 2:
        raise ConfigError(f"make_folds: k must be >= 2, got {k}")
    patients = pd.Index(sorted(catalog["patient_id"].astype(str).unique()))
    if k > len(patients):
        raise ConfigError(
            f"make_folds: {k} folds need at least {k} patients, the catalog has {len(patients)}; "
            "lower k or add data"
        )
    # Sorting the patient ids makes folds independent of the catalog's row order.
    y = _patient_labels(
        catalog.assign(patient_id=catalog["patient_id"].astype(str)), patients, labels
    )
    per_patient = _group_only(len(patients), k, seed) if y is None else _stratified(y, k, seed)
    per_patient = _fill_empty_folds(per_patient, k)
    fold_of = pd.Series(per_patient, index=patients)
    values = fold_of.reindex(catalog["patient_id"].astype(str)).to_numpy(dtype=np.int64)
    return pd.Series(values, index=catalog.index, name="fold", dtype="int64")


def fold_summary(
    catalog: pd.DataFrame, folds: pd.Series, labels: Sequence[str] = LABELS
) -> pd.DataFrame:
    """Per fold: patients, slices and positive rate per label (to check the balance by eye)."""
    frame = catalog.assign(fold=folds.to_numpy())
    out = frame.groupby("fold").agg(patients=("patient_id", "nunique"), slices=("fold", "size"))
    for label in labels:
        if label in frame.columns:
            out[label] = frame.groupby("fold")[label].mean()
    return out


def subsample_patients(
    catalog: pd.DataFrame, amount: float, seed: int, labels: Sequence[str] = LABELS
) -> np.ndarray:
    """Rows of a stratified subset of the patients (``data.subsample``), for quick prototyping.

    Whole patients are kept (folds stay grouped), in the same proportion from each stratum:
    patients by their rarest positive label (by prevalence in the catalog, e.g. epidural first
    for the six RSNA labels), negatives last, so rare subtypes survive a 5 % sample.

    Args:
        catalog: One row per slice with ``patient_id`` and the ``labels`` columns.
        amount: A fraction of the patients in (0, 1), or a number of patients (>= 1).
        seed: Draw seed.
        labels: The label columns (the cache's label names).

    Returns:
        bool (N,) mask of the rows kept.
    """
    if amount <= 0:
        raise ConfigError(f"data.subsample={amount}: must be a fraction in (0, 1) or a count >= 1")
    patients = pd.Index(pd.unique(catalog["patient_id"].to_numpy()))
    n_keep = round(amount * len(patients)) if amount < 1 else int(amount)
    n_keep = max(1, min(len(patients), n_keep))
    y = _patient_labels(catalog, patients, labels)
    if y is None:
        stratum = np.zeros(len(patients), dtype=np.int64)
    else:
        rarity = np.argsort(y.sum(axis=0), kind="stable")  # rarest label first
        stratum = np.full(len(patients), y.shape[1], dtype=np.int64)
        for rank, j in enumerate(rarity[::-1]):  # rarest last, so it wins
            stratum[y[:, j] == 1] = y.shape[1] - 1 - rank
    rng = np.random.default_rng(seed)
    keep = np.zeros(len(patients), dtype=bool)
    strata, counts = np.unique(stratum, return_counts=True)
    quota = np.floor(counts * n_keep / len(patients)).astype(int)
    # Largest remainders get the patients left over by the flooring.
    extra = np.argsort(-(counts * n_keep / len(patients) - quota), kind="stable")
    quota[extra[: n_keep - quota.sum()]] += 1
    for s, q in zip(strata, quota, strict=True):
        members = np.flatnonzero(stratum == s)
        keep[rng.choice(members, size=min(q, len(members)), replace=False)] = True
    return np.asarray(catalog["patient_id"].isin(patients[keep]).to_numpy(), dtype=bool)


def undersample_negatives(
    rows: np.ndarray, labels: np.ndarray, keep: float, seed: int
) -> np.ndarray:
    """Training rows with only a fraction ``keep`` of the negative slices (every label 0).

    Why: RSNA is 86 % negative slices; keeping, e.g., a third of them triples the share of
    positives per epoch at a third of the cost. Positives are all kept. Sorted result.
    """
    if not 0 < keep <= 1:
        raise ConfigError(f"data.undersample_negatives={keep}: must be in (0, 1]")
    negative = labels[rows].max(axis=1) < 0.5
    neg_rows = rows[negative]
    n = round(keep * len(neg_rows))
    chosen = np.random.default_rng(seed).choice(neg_rows, size=n, replace=False)
    return np.sort(np.concatenate([rows[~negative], chosen]))
