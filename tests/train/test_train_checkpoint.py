"""Model files (weights + ModelSpec) and training state files: round trips, named errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ich.data.preprocess import PreprocessSpec
from ich.errors import CheckpointError
from ich.labels import LABELS
from ich.models.spec import ModelSpec, Provenance, SequenceArch, SliceArch
from ich.runs.checkpoint import (
    load_model_file,
    load_sequence_model,
    load_slice_model,
    read_spec,
    save_model,
)
from ich.train.checkpoint import (
    ResumePoint,
    load_train_state,
    rng_state,
    save_train_state,
    set_rng_state,
)
from ich.train.state import TrainState


def _spec(kind: str = "slice", **arch: object) -> ModelSpec:
    return ModelSpec(
        kind=kind,  # type: ignore[arg-type]
        labels=tuple(LABELS),
        windows=(("brain", 40.0, 80.0),),
        offsets=(0,),
        input_size=32,
        preprocess=PreprocessSpec(size=64),
        mean=(0.0,) if kind == "slice" else (),
        std=(1.0,) if kind == "slice" else (),
        slice_arch=SliceArch("resnet10t", 1) if kind == "slice" else None,
        sequence_arch=SequenceArch(**arch) if kind == "sequence" else None,  # type: ignore[arg-type]
        provenance=Provenance("synthetic phantom cohort", "abc", "0.1.0", '{"train": {}}'),
    )


def test_round_trip_slice_model(tmp_path: Path) -> None:
    from ich.models.slice_cnn import SliceModel

    model = SliceModel("resnet10t", in_chans=1).eval()
    path = save_model(tmp_path / "c" / "slice_best.safetensors", model.state_dict(), _spec())
    spec = read_spec(path)
    assert spec == _spec() and spec.labels == tuple(LABELS)
    assert spec.provenance.config() == {"train": {}}
    again, _ = load_slice_model(path)
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x))
    assert not list(path.parent.glob(".*tmp")) and not list(path.parent.glob(".*safetensors"))
    with pytest.raises(CheckpointError, match="expected 'sequence'"):
        load_sequence_model(path)


def test_model_file_is_not_a_pickle(tmp_path: Path) -> None:
    """The server's loader reads safetensors only; the spec is plain JSON in its header."""
    from safetensors import safe_open

    from ich.models.slice_cnn import SliceModel

    model = SliceModel("resnet10t", in_chans=1)
    path = save_model(tmp_path / "m.safetensors", model.state_dict(), _spec())
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    assert json.loads(meta["ich_spec"])["input_size"] == 32
    state, spec = load_model_file(path)
    assert set(state) == set(model.state_dict()) and spec.kind == "slice"


def test_pretrained_normalisation_travels_in_the_spec(tmp_path: Path) -> None:
    from ich.models.slice_cnn import SliceModel

    model = SliceModel("resnet10t", in_chans=3, mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2))
    spec = ModelSpec(**{**_spec().__dict__, "mean": model.normalisation[0],
                        "std": model.normalisation[1],
                        "slice_arch": SliceArch("resnet10t", 3)})
    path = save_model(tmp_path / "n.safetensors", model.state_dict(), spec)
    again, _ = load_slice_model(path)
    assert again.normalisation == model.normalisation
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(x), model.eval()(x))
    scratch = SliceModel("resnet10t", in_chans=3)
    assert scratch.normalisation == ((0.0,) * 3, (1.0,) * 3)


def test_round_trip_sequence_model(tmp_path: Path) -> None:
    from ich.models.sequence import SequenceModel

    model = SequenceModel(in_dim=5, hidden=8, layers=1).eval()
    spec = _spec("sequence", in_dim=5, hidden=8, layers=1)
    path = save_model(tmp_path / "s.safetensors", model.state_dict(), spec)
    again, got = load_sequence_model(path)
    assert got.sequence_arch is not None and got.sequence_arch.features == "embedding+logits"
    feats, z, mask = (
        torch.rand(1, 4, 5),
        torch.full((1, 4), 5.0),
        torch.ones(1, 4, dtype=torch.bool),
    )
    with torch.no_grad():
        torch.testing.assert_close(again(feats, z, mask)[0], model(feats, z, mask)[0])


def test_sequence_feature_recipes(tmp_path: Path) -> None:
    from ich.models.sequence import SequenceModel
    from ich.runs.embed import sequence_features

    emb, logits = np.ones((4, 3), np.float32), np.zeros((4, 6), np.float32)
    assert sequence_features(emb, logits).shape == (4, 9)
    assert sequence_features(emb, logits, "logits").shape == (4, 6)
    with pytest.raises(ValueError, match="unknown sequence feature recipe"):
        sequence_features(emb, logits, "pixels")
    # A model file of a recipe this version does not know is refused with its name.
    model = SequenceModel(in_dim=6, hidden=8, layers=1)
    spec = _spec("sequence", in_dim=6, hidden=8, layers=1, features="pixels")
    path = save_model(tmp_path / "p.safetensors", model.state_dict(), spec)
    with pytest.raises(CheckpointError, match="'pixels' are not known"):
        load_sequence_model(path)


def test_missing_old_and_bad_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        read_spec(tmp_path / "none.safetensors")
    torch.save({"format": "ich-checkpoint/1", "model": {}}, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match="older ich"):
        load_slice_model(tmp_path / "old.pt")
    (tmp_path / "z.safetensors").write_bytes(b"not a model file")
    with pytest.raises(CheckpointError, match="cannot read"):
        read_spec(tmp_path / "z.safetensors")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CheckpointError, match="no ich spec"):
        read_spec(tmp_path / "plain.safetensors")


def test_spec_json_is_strict() -> None:
    text = _spec().to_json()
    assert ModelSpec.from_json(text) == _spec()
    data = json.loads(text)
    with pytest.raises(CheckpointError, match="unknown model spec keys"):
        ModelSpec.from_json(json.dumps({**data, "extra": 1}))
    del data["windows"]
    with pytest.raises(CheckpointError, match="incomplete"):
        ModelSpec.from_json(json.dumps(data))


def test_weights_that_do_not_fit_are_a_named_error(tmp_path: Path) -> None:
    path = save_model(tmp_path / "w.safetensors", {"w": torch.zeros(2)}, _spec())
    with pytest.raises(CheckpointError, match="do not fit"):
        load_slice_model(path)


def test_train_state_round_trip(tmp_path: Path) -> None:
    point = ResumePoint(TrainState(2, 8, 0.4, 1), {"state": {}}, {}, {"step": 8}, rng_state())
    path = save_train_state(tmp_path / "slice_last.state.pt", point)
    back = load_train_state(path)
    assert back.state == TrainState(2, 8, 0.4, 1) and back.scheduler == {"step": 8}
    with pytest.raises(CheckpointError, match="no training state"):
        load_train_state(tmp_path / "none.state.pt")
    torch.save({"format": "other"}, tmp_path / "y.pt")
    with pytest.raises(CheckpointError, match="not an ich-train-state"):
        load_train_state(tmp_path / "y.pt")


def test_rng_state_restores_draws() -> None:
    state = rng_state()
    first = torch.rand(3)
    set_rng_state(state)
    torch.testing.assert_close(torch.rand(3), first)
