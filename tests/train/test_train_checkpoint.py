"""Checkpoints: atomic round trip, self-description, named errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from ich.errors import CheckpointError
from ich.labels import LABELS
from ich.train.checkpoint import (
    FORMAT,
    load_checkpoint,
    load_sequence_model,
    load_slice_model,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


def _describe() -> dict[str, Any]:
    return {
        "config": {"train": {"epochs": 1}},
        "labels": list(LABELS),
        "windows": [["brain", 40.0, 80.0]],
        "offsets": [0],
        "input_size": 32,
        "preprocess": {"size": 64},
    }


def test_round_trip_slice_model(tmp_path: Path) -> None:
    from ich.models.slice_cnn import SliceModel

    model = SliceModel("resnet10t", in_chans=1).eval()
    path = save_checkpoint(
        tmp_path / "c" / "slice_best.pt",
        {
            "kind": "slice",
            "model": model.state_dict(),
            "model_args": model.model_args(),
            **_describe(),
            "epoch": 1,
            "step": 3,
            "best_metric": 0.5,
        },
    )
    ckpt = load_checkpoint(path)
    assert ckpt["format"] == FORMAT and ckpt["labels"] == list(LABELS)
    again = load_slice_model(ckpt)
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x))
    assert not list(path.parent.glob(".*tmp"))
    with pytest.raises(CheckpointError, match="expected 'sequence'"):
        load_sequence_model(ckpt)


def test_round_trip_sequence_model(tmp_path: Path) -> None:
    from ich.models.sequence import SequenceModel

    model = SequenceModel(in_dim=5, hidden=8, layers=1).eval()
    path = save_checkpoint(
        tmp_path / "s.pt",
        {
            "kind": "sequence",
            "model": model.state_dict(),
            "model_args": model.model_args(),
            **_describe(),
        },
    )
    again = load_sequence_model(path)
    feats, z, mask = (
        torch.rand(1, 4, 5),
        torch.full((1, 4), 5.0),
        torch.ones(1, 4, dtype=torch.bool),
    )
    with torch.no_grad():
        torch.testing.assert_close(again(feats, z, mask)[0], model(feats, z, mask)[0])


def test_missing_keys_and_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "none.pt")
    path = save_checkpoint(tmp_path / "x.pt", {"kind": "slice", "model": {}})
    with pytest.raises(CheckpointError, match=r"lacks keys.*model_args"):
        load_checkpoint(path)
    torch.save({"format": "other"}, tmp_path / "y.pt")
    with pytest.raises(CheckpointError, match="format"):
        load_checkpoint(tmp_path / "y.pt")
    (tmp_path / "z.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path / "z.pt")


def test_rng_state_restores_draws() -> None:
    state = rng_state()
    first = torch.rand(3)
    set_rng_state(state)
    torch.testing.assert_close(torch.rand(3), first)
