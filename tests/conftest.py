"""Shared fixtures: the real RSNA sample (skipped where absent) and a tiny phantom cohort."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")

REPO = Path(__file__).resolve().parents[1]
RSNA_SAMPLE = Path(os.environ.get("ICH_RSNA_SAMPLE", REPO.parent / "shared" / "data" / "rsna-sample"))


@pytest.fixture(scope="session")
def rsna_sample() -> Path:
    """The real RSNA sample folder (``stage_2_train/``, ``stage_2_test/``, label CSV)."""
    if not (RSNA_SAMPLE / "stage_2_train").is_dir():
        pytest.skip(f"real RSNA sample not found at {RSNA_SAMPLE}")
    return RSNA_SAMPLE


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small deterministic phantom cohort (6 studies, 128 px) in the Kaggle layout."""
    from ich.phantom import generate_cohort

    out = tmp_path_factory.mktemp("tiny_cohort")
    generate_cohort(out, studies=6, seed=7, size=128)
    return out
