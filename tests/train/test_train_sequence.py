"""Stage 2 end to end: embeddings, sequence model, out-of-fold table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ich.cli import main
from ich.labels import LABELS
from ich.runs.checkpoint import load_sequence_model
from ich.train.embeddings import load_embeddings


@pytest.mark.slow
def test_both_stages(
    tiny_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_overrides: list[str]
) -> None:
    run = tmp_path / "run"
    assert (
        main(["train", str(tiny_cache), "--out", str(run), *tiny_overrides, "train.epochs=1"]) == 0
    )
    out = capsys.readouterr().out
    assert "resnet10t (from scratch)" in out and str(run) in out
    _, spec = load_sequence_model(run / "checkpoints" / "sequence_best.safetensors")
    assert spec.kind == "sequence" and list(spec.labels) == list(LABELS)
    assert spec.input_size == 32 and spec.sequence_arch is not None
    assert spec.sequence_arch.features == "embedding+logits"
    t = spec.sequence_arch.temperature  # written into the model file once fitted
    assert f"temperature {t:.2f} fitted on the validation fold" in out or (
        t == 1.0 and "no temperature fitted" in out)
    emb = load_embeddings(run / "oof" / "slice_embeddings.npz")
    n = len(emb["image_id"])
    assert emb["embeddings"].shape[0] == n and emb["logits"].shape == (n, 6)
    frame = pd.read_parquet(run / "oof_predictions.parquet")
    expected = [
        "image_id",
        "patient_id",
        "study_instance_uid",
        "series_instance_uid",
        "slice_index",
        "fold",
        *LABELS,
        *(f"p_{k}" for k in LABELS),
        *(f"q_{k}" for k in LABELS),
    ]
    assert list(frame.columns) == expected
    assert (frame["fold"] == 0).all() and len(frame) > 0
    q = frame[[f"q_{k}" for k in LABELS]].to_numpy()
    assert np.all((q > 0) & (q < 1))
    folds = pd.read_csv(run / "folds.csv")
    assert set(frame["image_id"]) == set(folds.loc[folds["fold"] == 0, "image_id"])
    # stage 2 alone reuses the run's slice checkpoint; here on the CNN's logits alone
    assert main(["train", str(tiny_cache), "--out", str(run), "--stage", "sequence",
                 *tiny_overrides, "sequence.features=logits", "sequence.members=2"]) == 0
    out = capsys.readouterr().out
    assert "embeddings: reusing" in out  # same checkpoint, same slices
    assert "sequence model 2/2 (seed " in out and "sequence ensemble of 2" in out
    ensemble, spec = load_sequence_model(run / "checkpoints" / "sequence_best.safetensors")
    assert spec.sequence_arch is not None and spec.sequence_arch.features == "logits"
    assert spec.sequence_arch.members == 2 and len(ensemble.members) == 2  # type: ignore[union-attr]
    assert not list((run / "checkpoints").glob("sequence_member*"))
    assert spec.sequence_arch.in_dim == len(LABELS)
    # Inference builds the features the file names: a (T, D + 6) input would not fit the GRU.
    from ich.inference import Predictor

    predictor = Predictor.from_run(run)
    images = np.random.default_rng(0).integers(-50, 90, (5, 64, 64)).astype(np.int16)
    cnn, final, study = predictor.predict_preprocessed(images, np.full(5, 5.0, np.float32))
    assert final.shape == (5, len(LABELS)) and np.isfinite(final).all()
    assert not np.allclose(final, cnn) and study.shape == (len(LABELS),)


def test_one_slice_series_can_be_reversed() -> None:
    # Image folders make one-slice series; a reversed one-element view kept a negative stride.
    import numpy as np

    from ich.data.sequences import SequenceDataset

    ds = SequenceDataset({"s": np.ones((1, 4), np.float32)}, {"s": np.ones(1, np.float32)},
                       {"s": np.zeros((1, 6), np.float32)}, ["s"], train=True, reverse_p=1.0)
    item = ds[0]
    assert item[0].shape == (1, 4) and item[1].tolist() == [1.0]


def test_stage2_schedule_comes_from_sequence_config() -> None:
    from ich.config import load_config
    from ich.train.sequence_stage import sequence_lr

    cfg = load_config(None, ["sequence.lr=0.5", "sequence.schedule=constant",
                             "sequence.warmup_frac=0.0"])
    assert sequence_lr(0, 10, cfg) == pytest.approx(0.5)
    assert sequence_lr(9, 10, cfg) == pytest.approx(0.5)
    cfg = load_config(None, ["sequence.lr=0.5", "sequence.warmup_frac=0.5"])
    assert sequence_lr(0, 10, cfg) < 0.5  # warming up


def test_feature_noise_follows_each_features_spread_and_reaches_training() -> None:
    import torch

    from ich.config import load_config
    from ich.errors import ConfigError
    from ich.models.sequence import SequenceModel
    from ich.train.sequence_stage import SeriesData, feature_noise_scale, sequence_epoch
    from ich.train.state import TrainState

    rng = np.random.default_rng(0)
    feats = {s: (rng.normal(size=(8, 3)) * [1.0, 10.0, 0.0]).astype(np.float32) for s in "ab"}
    data = SeriesData(feats, {s: np.ones(8, np.float32) for s in "ab"},
                      {s: np.zeros((8, 6), np.float32) for s in "ab"}, {}, {})
    assert feature_noise_scale(data, ["a", "b"], 0.0) is None
    scale = feature_noise_scale(data, ["a", "b"], 0.5)
    assert scale is not None
    spread = np.concatenate([feats["a"], feats["b"]]).std(axis=0)
    np.testing.assert_allclose(scale.numpy(), 0.5 * spread, rtol=1e-5)
    assert scale[2] == 0  # a constant feature gets no noise

    seen: list[torch.Tensor] = []
    model = SequenceModel(3, hidden=8, layers=1)
    model.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    batch = {"features": torch.from_numpy(feats["a"])[None], "z_spacing": torch.ones(1, 8),
             "labels": torch.zeros(1, 8, 6), "mask": torch.ones(1, 8)}
    cfg = load_config(None, [])
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    sequence_epoch(model, opt, [batch], cfg, TrainState(), 1)  # type: ignore[arg-type]
    sequence_epoch(model, opt, [batch], cfg, TrainState(), 1, noise_scale=scale)  # type: ignore[arg-type]
    assert torch.equal(seen[0], batch["features"])
    diff = (seen[1] - batch["features"])[0]
    assert diff[:, 1].abs().mean() > diff[:, 0].abs().mean() > 0 and diff[:, 2].abs().max() == 0
    with pytest.raises(ConfigError, match="feature_noise"):
        load_config(None, ["sequence.feature_noise=-1"])
