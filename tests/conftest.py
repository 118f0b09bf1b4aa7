"""Shared fixtures: the real RSNA sample (skipped where absent) and a tiny phantom cohort."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")

REPO = Path(__file__).resolve().parents[1]
RSNA_SAMPLE = Path(
    os.environ.get("ICH_RSNA_SAMPLE", REPO.parent / "shared" / "data" / "rsna-sample")
)


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


#: Config overrides that make a training run take seconds: tiny backbone, 32 px, few steps.
TINY_TRAIN = [
    "model.backbone=resnet10t",
    "model.pretrained=false",
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
def tiny_overrides() -> list[str]:
    """Config overrides for second-long runs (tiny backbone, 32 px, 4 steps per epoch)."""
    return list(TINY_TRAIN)


@pytest.fixture(scope="session")
def tiny_cache(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny_cohort`` prepared into a 64 px cache with labels."""
    from ich.data.build import build_cache
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
def tiny_run(tiny_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained run folder (slice CNN + sequence model) on ``tiny_cache``, in seconds."""
    from ich.config import load_config
    from ich.train.runner import run_training

    run = tmp_path_factory.mktemp("tiny_run") / "run"
    cfg = load_config(None, [f"data.cache={tiny_cache}", "train.epochs=1", *TINY_TRAIN])
    run_training(cfg, tiny_cache, run)
    return run


@pytest.fixture(scope="session")
def make_run():  # type: ignore[no-untyped-def]
    """A factory of run folders with untrained (seeded) models for any label set.

    ``make_run(path, labels=("hemorrhage",), seed=0, sequence=True)`` writes a resnet10t slice
    CNN (one brain-window channel, 32 px input, 64 px cache) and, with ``sequence``, a study
    sequence model: enough to test everything downstream of training on the run's labels.
    """
    import torch

    from ich.data.preprocess import PreprocessSpec
    from ich.labels import LABELS
    from ich.models.sequence import SequenceModel
    from ich.models.slice_cnn import SliceModel
    from ich.models.spec import ModelSpec, Provenance, SequenceArch, SliceArch
    from ich.runs.checkpoint import save_model

    def factory(path: Path, labels: tuple[str, ...] = LABELS, seed: int = 0,
                sequence: bool = True) -> Path:
        torch.manual_seed(seed)
        k = len(labels)
        model = SliceModel("resnet10t", in_chans=1, num_labels=k)
        common = {
            "labels": tuple(labels), "windows": (("brain", 40.0, 80.0),), "offsets": (0,),
            "input_size": 32, "preprocess": PreprocessSpec(size=64),
            "provenance": Provenance("synthetic phantom cohort (test)"),
        }
        spec = ModelSpec(kind="slice", mean=(0.0,), std=(1.0,),
                         slice_arch=SliceArch("resnet10t", 1), **common)  # type: ignore[arg-type]
        save_model(path / "checkpoints" / "slice_best.safetensors", model.state_dict(), spec)
        if sequence:
            in_dim = model.embed_dim + k
            seq = SequenceModel(in_dim, "gru", hidden=16, layers=1, dropout=0.0, num_labels=k)
            seq_spec = ModelSpec(kind="sequence", sequence_arch=SequenceArch(
                in_dim=in_dim, kind="gru", hidden=16, layers=1, dropout=0.0),
                **common)  # type: ignore[arg-type]
            save_model(path / "checkpoints" / "sequence_best.safetensors", seq.state_dict(),
                       seq_spec)
        return path

    return factory
