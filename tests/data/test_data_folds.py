"""make_folds: patients never split, folds non-empty and balanced, deterministic for a seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ich.data.folds import fold_summary, make_folds
from ich.errors import ConfigError
from ich.labels import LABELS


def _catalog(n_patients: int = 60, seed: int = 0, labelled: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        n = int(rng.integers(5, 15))
        bleed = rng.random(len(LABELS) - 1) < [0.1, 0.3, 0.2, 0.3, 0.35]
        for s in range(n):
            sub = bleed & (rng.random(len(bleed)) < 0.5)
            rows.append({"patient_id": f"P{p:03d}", "slice_index": s,
                         **dict(zip(LABELS, [float(sub.any()), *sub.astype(float)], strict=True))})
    cat = pd.DataFrame(rows)
    if not labelled:
        cat[list(LABELS)] = np.nan
    return cat.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # rows shuffled


def test_patients_never_split_and_folds_nonempty() -> None:
    cat = _catalog()
    folds = make_folds(cat, k=5, seed=1)
    assert folds.index.equals(cat.index) and folds.name == "fold"
    assert (cat.assign(f=folds).groupby("patient_id")["f"].nunique() == 1).all()
    assert sorted(folds.unique()) == [0, 1, 2, 3, 4]


def test_labels_roughly_balanced_at_patient_level() -> None:
    cat = _catalog(n_patients=100)
    folds = make_folds(cat, k=5, seed=1)
    per_patient = cat.assign(f=folds).groupby("patient_id").agg(
        {"f": "first", **{lab: "max" for lab in LABELS}})
    counts = per_patient.groupby("f")[list(LABELS)].sum()  # positive patients per fold
    total = counts.sum()
    assert ((counts - total / 5).abs() <= np.maximum(3.5, 0.25 * total / 5)).all().all()
    assert (counts.loc[:, total >= 5] >= 1).all().all()  # every label reaches every fold
    summary = fold_summary(cat, folds)
    assert summary["patients"].sum() == 100


def test_same_seed_same_folds_other_seed_other_folds() -> None:
    cat = _catalog()
    a, b = make_folds(cat, 4, seed=3), make_folds(cat, 4, seed=3)
    assert a.equals(b)
    assert not a.equals(make_folds(cat, 4, seed=4))
    # independent of row order
    shuffled = cat.sample(frac=1.0, random_state=9)
    assert make_folds(shuffled, 4, seed=3).sort_index().equals(a.sort_index())


def test_unlabelled_catalog_gets_group_folds() -> None:
    cat = _catalog(n_patients=10, labelled=False)
    folds = make_folds(cat, k=3, seed=0)
    per_patient = cat.assign(f=folds).groupby("patient_id")["f"].agg(["nunique", "first"])
    assert (per_patient["nunique"] == 1).all()
    assert sorted(np.bincount(per_patient["first"], minlength=3)) == [3, 3, 4]


def test_too_many_folds_and_bad_input() -> None:
    cat = _catalog(n_patients=3)
    with pytest.raises(ConfigError, match="at least 4 patients"):
        make_folds(cat, k=4, seed=0)
    with pytest.raises(ConfigError, match="patient_id"):
        make_folds(cat.drop(columns="patient_id"), k=2, seed=0)
    with pytest.raises(ConfigError, match="k must be"):
        make_folds(cat, k=1, seed=0)
    assert sorted(make_folds(cat, k=3, seed=0).unique()) == [0, 1, 2]


def _sampling_catalog() -> tuple[pd.DataFrame, np.ndarray]:
    """40 patients x 5 slices; patients 0-3 have epidural, 4-13 subdural, the rest negative."""
    rows = []
    for p in range(40):
        for s in range(5):
            lab = dict.fromkeys(LABELS, 0.0)
            if p < 4 and s == 2:
                lab.update(any=1.0, epidural=1.0)
            elif 4 <= p < 14 and s >= 3:
                lab.update(any=1.0, subdural=1.0)
            rows.append({"patient_id": f"P{p:02d}", **lab})
    cat = pd.DataFrame(rows)
    return cat, cat[list(LABELS)].to_numpy(dtype=np.float32)


def test_subsample_keeps_whole_patients_stratified() -> None:
    from ich.data.folds import subsample_patients

    cat, _ = _sampling_catalog()
    keep = subsample_patients(cat, 0.5, seed=1)
    kept = cat[keep]
    assert kept["patient_id"].nunique() == 20
    assert kept.groupby("patient_id").size().eq(5).all()  # whole patients only
    per = kept.groupby("patient_id")[["epidural", "subdural"]].max().sum()
    assert per["epidural"] == 2 and per["subdural"] == 5  # half of each stratum
    assert subsample_patients(cat, 3, seed=1).sum() == 15  # a count of patients
    assert (subsample_patients(cat, 0.5, seed=1) == keep).all()  # deterministic
    with pytest.raises(ConfigError, match="subsample"):
        subsample_patients(cat, 0, seed=1)


def test_undersample_negatives_keeps_every_positive() -> None:
    from ich.data.folds import undersample_negatives

    _, labels = _sampling_catalog()
    rows = np.arange(len(labels))
    out = undersample_negatives(rows, labels, 0.25, seed=0)
    positive = labels.max(axis=1) > 0.5
    assert set(np.flatnonzero(positive)) <= set(out.tolist())
    assert (~positive[out]).sum() == round(0.25 * (~positive).sum())
    assert (np.diff(out) > 0).all()
    with pytest.raises(ConfigError, match="undersample"):
        undersample_negatives(rows, labels, 1.5, seed=0)


def test_split_indices_applies_sampling_and_reports_it(tiny_cache: Path, tmp_path: Path) -> None:
    import json

    from ich.config import load_config
    from ich.data.cache import SliceCache
    from ich.train.runner import load_or_make_folds, split_indices, write_sampling

    cache = SliceCache(tiny_cache)
    cfg = load_config(None, ["data.folds=3", "data.subsample=0.5",
                             "data.undersample_negatives=0.5"])
    folds = load_or_make_folds(cfg, cache, tmp_path, write=False)
    full_cfg = load_config(None, ["data.folds=3"])
    full_train, full_val = split_indices(full_cfg, cache, folds)
    train, val = split_indices(cfg, cache, folds)
    assert set(train) < set(full_train) and set(val) <= set(full_val)
    patients = cache.catalog["patient_id"].to_numpy()
    assert len(set(patients[np.r_[train, val]])) == round(0.5 * len(set(patients)))
    data = json.loads(write_sampling(cfg, cache, train, val, tmp_path).read_text())
    assert data["subsample"] == 0.5 and data["train_slices"] == len(train)
