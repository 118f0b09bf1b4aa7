"""Temperature scaling of the sequence model: the fit, the model and the model file; the
sequence ensemble that the same file can hold."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from ich.errors import CheckpointError
from ich.eval.metrics import weighted_log_loss
from ich.labels import LABELS
from ich.models.sequence import SequenceModel
from ich.models.spec import ModelSpec, PreprocessSpec, SequenceArch
from ich.runs.checkpoint import load_sequence_model, save_model
from ich.train.calibrate import TEMPERATURE_RANGE, fit_temperature, scale_probabilities


def _overconfident(n: int, factor: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from sigmoid(z) and probabilities sigmoid(factor * z): too extreme."""
    rng = np.random.default_rng(seed)
    z = rng.normal(-1.5, 2.0, size=(n, len(LABELS)))
    y = (rng.random(z.shape) < 1 / (1 + np.exp(-z))).astype(np.float32)
    return y, 1 / (1 + np.exp(-factor * z))


def test_fit_recovers_the_overconfidence_and_lowers_the_log_loss() -> None:
    y, p = _overconfident(4000, 2.0)
    t = fit_temperature(y, p)
    assert t is not None and abs(t - 2.0) < 0.2
    assert weighted_log_loss(y, scale_probabilities(p, t)) < 0.95 * weighted_log_loss(y, p)
    y, p = _overconfident(4000, 0.6, seed=1)  # underconfident: a temperature below 1
    t = fit_temperature(y, p)
    assert t is not None and abs(t - 0.6) < 0.1


def test_scaling_keeps_the_ranking_and_one_is_the_identity() -> None:
    _, p = _overconfident(500, 1.0)
    assert np.allclose(scale_probabilities(p, 1.0), p, atol=1e-6)
    scaled = scale_probabilities(p[:, 0], 1.7)
    assert np.array_equal(np.argsort(scaled, kind="stable"), np.argsort(p[:, 0], kind="stable"))


def test_a_fold_without_positives_fits_nothing() -> None:
    y, p = _overconfident(200, 2.0)
    assert fit_temperature(np.zeros_like(y), p) is None
    assert fit_temperature(y[:0], p[:0]) is None
    t = fit_temperature(y, np.where(y == 1, 1e-9, 1 - 1e-9))  # always wrong: the bound holds
    assert t is not None and TEMPERATURE_RANGE[0] <= t <= TEMPERATURE_RANGE[1]


def test_the_model_file_carries_the_temperature(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = SequenceModel(10, "gru", 8, 1, 0.0)
    arch = SequenceArch(in_dim=10, hidden=8, layers=1, dropout=0.0)
    spec = ModelSpec(kind="sequence", labels=LABELS, windows=(("brain", 40.0, 80.0),),
                     offsets=(0,), input_size=32, preprocess=PreprocessSpec(size=32),
                     sequence_arch=replace(arch, temperature=2.5))
    save_model(tmp_path / "seq.safetensors", model.state_dict(), spec)
    again, read = load_sequence_model(tmp_path / "seq.safetensors")
    assert read.sequence_arch is not None and read.sequence_arch.temperature == 2.5
    feats, z, mask = torch.randn(2, 5, 10), torch.full((2, 5), 5.0), torch.ones(2, 5, dtype=bool)
    model.eval()
    with torch.no_grad():
        raw, scaled = model(feats, z, mask), again(feats, z, mask)
    for a, b in zip(raw, scaled, strict=True):
        assert torch.allclose(a / 2.5, b, atol=1e-6)
    # A spec written before temperatures existed reads as 1 (no scaling).
    old = spec.to_json().replace('"temperature": 2.5, ', "")
    assert '"temperature"' not in old
    parsed = ModelSpec.from_json(old).sequence_arch
    assert parsed is not None and parsed.temperature == 1.0


@pytest.mark.parametrize("kind", ["gru", "transformer"])  # the default and the demo's
def test_a_sequence_ensemble_averages_its_members_and_round_trips(tmp_path: Path,
                                                                  kind: str) -> None:
    from ich.models.sequence import SequenceEnsemble

    torch.manual_seed(0)
    members = [SequenceModel(10, kind, 8, 1, 0.0) for _ in range(3)]
    ensemble = SequenceEnsemble(members, temperature=2.0).eval()
    feats, z, mask = torch.randn(2, 5, 10), torch.full((2, 5), 5.0), torch.ones(2, 5, dtype=bool)
    with torch.no_grad():
        outs = [m.eval()(feats, z, mask) for m in members]
        slices, study = ensemble(feats, z, mask)
    mean_slices = torch.stack([s for s, _ in outs]).mean(0)
    torch.testing.assert_close(slices, mean_slices / 2.0)
    torch.testing.assert_close(study, torch.stack([s for _, s in outs]).mean(0) / 2.0)
    assert not torch.allclose(outs[0][0], mean_slices)  # the members differ

    arch = SequenceArch(in_dim=10, kind=kind, hidden=8, layers=1, dropout=0.0, temperature=2.0,
                        members=3)
    spec = ModelSpec(kind="sequence", labels=LABELS, windows=(("brain", 40.0, 80.0),),
                     offsets=(0,), input_size=32, preprocess=PreprocessSpec(size=32),
                     sequence_arch=arch)
    save_model(tmp_path / "ens.safetensors", ensemble.state_dict(), spec)
    again, read = load_sequence_model(tmp_path / "ens.safetensors")
    assert isinstance(again, SequenceEnsemble) and read.sequence_arch == arch
    with torch.no_grad():
        torch.testing.assert_close(again(feats, z, mask)[0], slices)
    # A file whose spec says one model cannot take an ensemble's weights.
    save_model(tmp_path / "bad.safetensors", ensemble.state_dict(),
               replace(spec, sequence_arch=replace(arch, members=1)))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_sequence_model(tmp_path / "bad.safetensors")
