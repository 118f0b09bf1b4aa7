"""The recipe knobs inside the real stage-1 loop: freezing, EMA, accumulation, plateau, resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from ich.config import RunConfig, load_config
from ich.models.slice_cnn import build_slice_model
from ich.runs.checkpoint import load_model_file
from ich.train.checkpoint import load_train_state
from ich.train.common import seed_everything
from ich.train.distributed import DistInfo
from ich.train.loop import model_args, train_slice_model
from ich.train.runner import prepare_run, split_indices

RECIPE = [
    "train.epochs=2",
    "train.batch_size=8",
    "train.accumulate=2",
    "train.max_steps_per_epoch=2",
    "train.freeze_epochs=1",
    "train.ema_decay=0.5",
    "train.early_stopping_patience=null",
    "optim.name=sgd",
    "optim.lr=0.05",
    "optim.momentum=0.9",
    "optim.nesterov=true",
    "optim.backbone_lr_mult=0.1",
    "optim.schedule=plateau",
    "optim.plateau_patience=1",
    "optim.plateau_factor=0.5",
    "loss.name=focal",
]


def _train(cfg: RunConfig, cache_dir: Path, run: Path, resume: bool, stop: int | None) -> None:
    seed_everything(cfg.train.seed)
    cache, folds = prepare_run(cfg, cache_dir, run, DistInfo())
    tr, va = split_indices(cfg, cache, folds)
    train_slice_model(
        cfg, cache, tr, va, run, torch.device("cpu"), DistInfo(), resume=resume, stop_after=stop
    )


def _last(run: Path) -> dict[str, Any]:
    """slice_last as one dict: EMA weights, raw weights, training state."""
    ckpt = run / "checkpoints"
    point = load_train_state(ckpt / "slice_last.state.pt")
    return {
        "model": load_model_file(ckpt / "slice_last.safetensors")[0],
        "train_model": load_model_file(ckpt / "slice_last.raw.safetensors")[0],
        "step": point.state.step,
        "scheduler": point.scheduler,
        "optimizer": point.optimizer,
    }


def _lrs(run: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["lr"]) for r in rows if r["split"] == "train" and "lr" in r]


@pytest.mark.slow
def test_recipe_resume_freeze_ema(
    tiny_cache: Path, tmp_path: Path, tiny_overrides: list[str]
) -> None:
    cfg = load_config(None, [*tiny_overrides, *RECIPE])
    seed_everything(cfg.train.seed)
    initial = build_slice_model(**model_args(cfg)).state_dict()

    # Interrupted after epoch 1 (the frozen one), then resumed.
    _train(cfg, tiny_cache, tmp_path / "b", resume=False, stop=1)
    first = _last(tmp_path / "b")
    for key, value in first["train_model"].items():
        if key.startswith("backbone."):  # frozen epoch: weights and BatchNorm stats untouched
            assert torch.equal(value, initial[key]), key
    assert not torch.equal(first["train_model"]["classifier.weight"], initial["classifier.weight"])
    _train(cfg, tiny_cache, tmp_path / "b", resume=True, stop=None)
    _train(cfg, tiny_cache, tmp_path / "a", resume=False, stop=None)

    a, b = _last(tmp_path / "a"), _last(tmp_path / "b")
    assert a["step"] == b["step"] == 4  # 2 epochs x 2 optimizer steps (of 2 micro-batches)
    assert _lrs(tmp_path / "a") == _lrs(tmp_path / "b")
    assert a["scheduler"] == b["scheduler"]
    for part in ("model", "train_model"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), (part, key)
    # unfrozen later, at the discriminative learning rate
    moved = [k for k in initial if k.startswith("backbone.") and k.endswith("weight")
             and not torch.equal(a["train_model"][k], initial[k])]
    assert moved
    lrs = {g["name"]: g["lr"] for g in a["optimizer"]["param_groups"]}
    assert lrs["backbone"] == pytest.approx(0.1 * lrs["head"])
    # the checkpoint's model is the EMA of the weights, not the weights themselves
    assert not torch.equal(a["model"]["classifier.weight"], a["train_model"]["classifier.weight"])
