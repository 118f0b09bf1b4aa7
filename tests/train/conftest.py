"""A tiny cache (6 phantom studies at 64 px) and tiny training overrides, shared by train tests."""

from __future__ import annotations

from pathlib import Path

import pytest

#: Overrides that make a run take seconds: tiny backbone, 32 px, few steps, CPU, no workers.
_TINY = [
    "model.backbone=resnet10t",
    "model.drop_rate=0.0",
    "data.input_size=32",
    "data.folds=3",
    "data.fold=0",
    "train.batch_size=16",
    "train.workers=0",
    "train.device=cpu",
    "train.amp=false",
    "train.max_steps_per_epoch=4",
    "train.log_every=1",
    "train.seed=3",
    "optim.lr=0.003",
    "optim.warmup_frac=0.0",
    "augment.enabled=false",
    "sequence.hidden=16",
    "sequence.layers=1",
    "sequence.epochs=2",
    "sequence.batch_size=4",
    "sequence.embed_batch_size=32",
]


@pytest.fixture(scope="session")
def tiny_cache(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny_cohort`` prepared into a 64 px cache with labels."""
    from ich.data.cache import build_cache
    from ich.data.preprocess import PreprocessSpec

    out = tmp_path_factory.mktemp("tiny_cache") / "cache"
    build_cache(
        tiny_cohort / "images",
        out,
        labels_csv=tiny_cohort / "labels.csv",
        spec=PreprocessSpec(size=64),
        workers=1,
        progress=False,
    )
    return out


@pytest.fixture(scope="session")
def tiny_overrides() -> list[str]:
    """Config overrides for second-long runs (tiny backbone, 32 px, 4 steps per epoch)."""
    return list(_TINY)
