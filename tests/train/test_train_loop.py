"""Stage 1 end to end on a tiny cache: run folder, loss goes down, exact resume, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ich.cli import main
from ich.config import load_config
from ich.runs.checkpoint import load_model_file, read_spec
from ich.train.checkpoint import load_train_state
from ich.train.runner import run_training


@pytest.fixture(scope="module")
def slice_run(
    tiny_cache: Path, tmp_path_factory: pytest.TempPathFactory, tiny_overrides: list[str]
) -> Path:
    """Two epochs of stage 1 through the ``ich train`` command."""
    run = tmp_path_factory.mktemp("runs") / "a"
    rc = main(
        [
            "train",
            str(tiny_cache),
            "--out",
            str(run),
            "--stage",
            "slice",
            *tiny_overrides,
            "train.epochs=2",
        ]
    )
    assert rc == 0
    return run


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_model_file(path)[0]


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_run_folder_and_loss(slice_run: Path) -> None:
    for name in (
        "config.yaml",
        "folds.csv",
        "metrics.jsonl",
        "checkpoints/slice_last.safetensors",
        "checkpoints/slice_last.state.pt",
        "checkpoints/slice_best.safetensors",
    ):
        assert (slice_run / name).is_file(), name
    records = [json.loads(line) for line in (slice_run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["split"] == "train" and "lr" in r]
    val = [r for r in records if r["split"] == "val"]
    assert len(steps) == 8 and len(val) == 2
    # A zero-logit head scores log(2) = 0.693; a few steps must learn the low base rates.
    assert steps[-1]["loss"] < steps[0]["loss"]
    assert val[-1]["wll"] < 0.6
    spec = read_spec(slice_run / "checkpoints" / "slice_last.safetensors")
    point = load_train_state(slice_run / "checkpoints" / "slice_last.state.pt")
    assert spec.kind == "slice" and point.state.epoch == 2 and point.state.step == 8
    assert spec.input_size == 32 and spec.windows[0] == ("brain", 40.0, 80.0)
    assert spec.preprocess.size == 64 and spec.slice_arch is not None
    assert spec.slice_arch.backbone == "resnet10t"
    assert spec.provenance.config()["train"]["epochs"] == 2
    assert point.optimizer["state"] and point.scaler is not None and point.rng
    assert point.scheduler["total_steps"] == 8


@pytest.mark.slow
def test_exact_resume(
    slice_run: Path, tiny_cache: Path, tmp_path: Path, tiny_overrides: list[str]
) -> None:
    from ich.train.common import seed_everything
    from ich.train.distributed import DistInfo
    from ich.train.loop import train_slice_model
    from ich.train.runner import prepare_run, split_indices

    cfg = load_config(None, [*tiny_overrides, "train.epochs=2"])
    run = tmp_path / "b"
    for resume, stop in ((False, 1), (True, None)):
        seed_everything(cfg.train.seed)
        cache, folds = prepare_run(cfg, tiny_cache, run, DistInfo())
        tr, va = split_indices(cfg, cache, folds)
        res = train_slice_model(
            cfg, cache, tr, va, run, torch.device("cpu"), DistInfo(), resume=resume, stop_after=stop
        )
        assert res.epochs_run == (1 if stop else 2)
    _assert_same(
        _weights(run / "checkpoints" / "slice_last.safetensors"),
        _weights(slice_run / "checkpoints" / "slice_last.safetensors"),
    )


@pytest.mark.slow
def test_same_seed_same_weights(
    slice_run: Path, tiny_cache: Path, tmp_path: Path, tiny_overrides: list[str]
) -> None:
    cfg = load_config(None, [*tiny_overrides, "train.epochs=2"])
    run_training(cfg, tiny_cache, tmp_path / "c", stages=("slice",))
    _assert_same(
        _weights(tmp_path / "c" / "checkpoints" / "slice_last.safetensors"),
        _weights(slice_run / "checkpoints" / "slice_last.safetensors"),
    )


def test_resume_command_needs_last_checkpoint(
    tiny_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_overrides: list[str]
) -> None:
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.yaml").write_text("train:\n  epochs: 1\n")
    rc = main(["train", str(tiny_cache), "--resume", str(tmp_path / "r"), *tiny_overrides])
    assert rc == 1
    assert "slice_last.safetensors" in capsys.readouterr().err
