"""The phantom cohort: layout, CSV formats, determinism, labels vs masks, prevalence."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ich.errors import ConfigError
from ich.labels import LABELS, SUBTYPES, read_labels
from ich.phantom import CohortSummary, generate_cohort


def _digest(folder: Path) -> str:
    """One hash over every file name and its bytes."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CohortSummary]:
    out = tmp_path_factory.mktemp("phantom")
    return out, generate_cohort(out, studies=5, seed=11, size=96, prevalence=0.5)


def test_same_seed_same_bytes_whatever_the_workers(tmp_path: Path) -> None:
    generate_cohort(tmp_path / "a", studies=3, seed=5, size=64)
    generate_cohort(tmp_path / "b", studies=3, seed=5, size=64, workers=2)
    generate_cohort(tmp_path / "c", studies=3, seed=6, size=64)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_layout_and_summary(cohort: tuple[Path, CohortSummary]) -> None:
    out, summary = cohort
    images = sorted((out / "images").glob("*.dcm"))
    assert len(images) == summary.slices > 0
    assert all(len(p.stem) == 12 and p.stem.startswith("ID_") for p in images)
    int(images[0].stem[3:], 16)  # hex
    masks = list((out / "masks").glob("*.npz"))
    assert len(masks) == summary.positives["any"]
    assert summary.files == len(images) + len(masks) + 2
    assert not list(out.rglob("*.tmp"))
    assert summary.studies == 5 and 1 <= summary.patients <= 5


def test_labels_csv_is_kaggle_long_format(cohort: tuple[Path, CohortSummary]) -> None:
    out, summary = cohort
    long = pd.read_csv(out / "labels.csv")
    assert list(long.columns) == ["ID", "Label"]
    assert len(long) == 6 * summary.slices
    first = long["ID"].iloc[:6].str.rsplit("_", n=1).str[1].tolist()
    assert first == list(LABELS)
    wide = read_labels(out / "labels.csv")
    assert (wide["any"] == wide[list(SUBTYPES)].max(axis=1)).all()
    assert {name: int(wide[name].sum()) for name in LABELS} == summary.positives


def test_patients_csv(cohort: tuple[Path, CohortSummary]) -> None:
    out, summary = cohort
    patients = pd.read_csv(out / "patients.csv")
    assert list(patients.columns) == [
        "image_id", "patient_id", "study_instance_uid", "series_instance_uid", "slice_index"
    ]
    assert len(patients) == summary.slices
    assert patients["study_instance_uid"].nunique() == summary.studies
    for _, group in patients.groupby("series_instance_uid"):
        assert sorted(group["slice_index"]) == list(range(len(group)))
        assert 24 <= len(group) <= 44


def test_labels_agree_with_masks(cohort: tuple[Path, CohortSummary]) -> None:
    out, _ = cohort
    wide = read_labels(out / "labels.csv")
    for image_id, row in wide.iterrows():
        path = out / "masks" / f"{image_id}.npz"
        if not row["any"]:
            assert not path.exists()
            continue
        with np.load(path) as npz:
            present = {k: npz[k] for k in npz.files}
        assert set(present) == {s for s in SUBTYPES if row[s]}
        for mask in present.values():
            assert mask.dtype == np.uint8 and mask.shape == (96, 96) and mask.sum() >= 2


def test_patients_recur_across_studies(tmp_path: Path) -> None:
    from ich.phantom.cohort import plan_cohort

    plans = plan_cohort(studies=40, seed=1, size=64, scale=1.0)
    per_patient = pd.Series([p.patient_id for p in plans]).value_counts()
    assert per_patient.max() == 2
    assert 0.05 <= (per_patient == 2).mean() <= 0.3
    ids = [i for p in plans for i in p.image_ids]
    assert len(ids) == len(set(ids))


def test_refuses_to_overwrite_a_cohort(cohort: tuple[Path, CohortSummary]) -> None:
    out, _ = cohort
    with pytest.raises(ConfigError, match="already holds"):
        generate_cohort(out, studies=1, seed=1, size=64)
    with pytest.raises(ConfigError):
        generate_cohort(out / "new", studies=0, seed=1, size=64)


@pytest.mark.slow  # >= 5 s of CPU (20-34 s wall on the loaded 2-core machine)
def test_prevalence_near_rsna_rates(tmp_path: Path) -> None:
    summary = generate_cohort(tmp_path, studies=40, seed=3, size=64)
    rate = summary.positives["any"] / summary.slices
    assert 0.07 <= rate <= 0.25, summary.positives


def test_prevalence_option_scales_rates(tmp_path: Path) -> None:
    summary = generate_cohort(tmp_path, studies=20, seed=3, size=64, prevalence=0.0)
    assert summary.positives["any"] == 0
    assert not list((tmp_path / "masks").glob("*.npz"))
