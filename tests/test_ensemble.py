"""Ensembles (issue 12.1, 12.2): each RUN argument counts once, optional weights, and members
trained with different preprocessing are each fed their own."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ich.data.preprocess import PreprocessSpec
from ich.dicom.io import read_slice
from ich.errors import CheckpointError
from ich.inference import Predictor
from ich.labels import LABELS
from ich.models.slice_cnn import SliceModel
from ich.models.spec import ModelSpec, Provenance, SliceArch
from ich.runs.checkpoint import save_model
from ich.runs.foldset import FOLDSET_FILE, FOLDSET_FORMAT

SIZE64 = PreprocessSpec(size=64)


def _run(path: Path, seed: int, spec: PreprocessSpec = SIZE64) -> Path:
    """A run folder with an untrained (seeded) slice CNN: enough to compare predictions."""
    torch.manual_seed(seed)
    model = SliceModel("resnet10t", in_chans=1)
    spec_ = ModelSpec(
        kind="slice",
        labels=tuple(LABELS),
        windows=(("brain", 40.0, 80.0),),
        offsets=(0,),
        input_size=32,
        preprocess=spec,
        mean=(0.0,),
        std=(1.0,),
        slice_arch=SliceArch("resnet10t", 1),
        provenance=Provenance("synthetic phantom cohort"),
    )
    save_model(path / "checkpoints" / "slice_best.safetensors", model.state_dict(), spec_)
    return path


def _fold_set(path: Path, seeds: list[int]) -> Path:
    names = [f"fold{i}" for i in range(len(seeds))]
    for name, seed in zip(names, seeds, strict=True):
        _run(path / name, seed)
    (path / FOLDSET_FILE).write_text(
        json.dumps({"format": FOLDSET_FORMAT, "folds": len(seeds), "runs": names})
    )
    return path


def _images() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(-100, 120, (5, 64, 64)).astype(np.int16), np.full(5, 5.0, np.float32)


def test_a_fold_set_counts_once_in_an_ensemble(tmp_path: Path) -> None:
    a = _run(tmp_path / "a", 1)
    folds = _fold_set(tmp_path / "fs", [2, 3, 4, 5, 6])
    images, z = _images()
    p_a = Predictor.from_run(a, engine="torch").predict_preprocessed(images, z)[0]
    p_fs = Predictor.from_run(folds, engine="torch").predict_preprocessed(images, z)[0]
    both = Predictor.from_run([a, folds], engine="torch").predict_preprocessed(images, z)[0]
    np.testing.assert_allclose(both, (p_a + p_fs) / 2, atol=1e-5)
    assert not np.allclose(both, (p_a + 5 * p_fs) / 6, atol=1e-4)  # not one sixth for A


def test_weights_per_run_argument(tmp_path: Path) -> None:
    a, b = _run(tmp_path / "a", 1), _fold_set(tmp_path / "fs", [2, 3])
    images, z = _images()
    p_a = Predictor.from_run(a, engine="torch").predict_preprocessed(images, z)[0]
    p_b = Predictor.from_run(b, engine="torch").predict_preprocessed(images, z)[0]
    got = Predictor.from_run([a, b], engine="torch", weights=[1, 2])
    np.testing.assert_allclose(
        got.predict_preprocessed(images, z)[0], (p_a + 2 * p_b) / 3, atol=1e-5
    )
    with pytest.raises(ValueError, match="one weight per run"):
        Predictor.from_run([a, b], engine="torch", weights=[1])
    with pytest.raises(ValueError, match="positive"):
        Predictor.from_run([a, b], engine="torch", weights=[1, -1])


def test_members_with_other_preprocessing_get_their_own(
    tmp_path: Path, tiny_cohort: Path
) -> None:
    crop = _run(tmp_path / "crop", 1, PreprocessSpec(size=64, crop=True))
    whole = _run(tmp_path / "whole", 2, PreprocessSpec(size=48, crop=False))
    files = sorted((tiny_cohort / "images").glob("*.dcm"))
    first = read_slice(files[0])
    series = [
        s for s in (read_slice(f) for f in files)
        if s.meta.series_instance_uid == first.meta.series_instance_uid
    ]
    hus, metas = [s.hu for s in series], [s.meta for s in series]
    p_crop = Predictor.from_run(crop, engine="torch").predict_slices(hus, metas).slice_probs
    p_whole = Predictor.from_run(whole, engine="torch").predict_slices(hus, metas).slice_probs
    mixed = Predictor.from_run([crop, whole], engine="torch")
    np.testing.assert_allclose(
        mixed.predict_slices(hus, metas).slice_probs, (p_crop + p_whole) / 2, atol=1e-5
    )
    # Already-preprocessed input can only serve members of one preprocessing: a named error.
    images, z = _images()
    with pytest.raises(CheckpointError, match="preprocess"):
        mixed.predict_preprocessed(images, z)


@pytest.mark.slow  # >= 5 s of CPU (20-34 s wall on the loaded 2-core machine)
def test_ich_predict_mixed_crops_and_weights_from_a_dicom_folder(
    tmp_path: Path, tiny_cohort: Path
) -> None:
    """A DICOM INPUT is preprocessed once per crop; the submission is the weighted mean."""
    import pandas as pd

    from ich.cli import main

    crop = _run(tmp_path / "crop", 1, PreprocessSpec(size=64, crop=True))
    whole = _run(tmp_path / "whole", 2, PreprocessSpec(size=64, crop=False))
    images = tiny_cohort / "images"
    subs = {}
    for name, runs in (("c", [crop]), ("w", [whole]), ("cw", [crop, whole])):
        out = tmp_path / f"{name}.csv"
        extra = ["--weights", "1,3"] if name == "cw" else []
        assert main(["predict", *map(str, runs), str(images), "--out", str(out),
                     "--workers", "1", *extra]) == 0
        subs[name] = pd.read_csv(out).set_index("ID")["Label"]
    want = (subs["c"] + 3 * subs["w"]) / 4
    np.testing.assert_allclose(subs["cw"].loc[want.index].to_numpy(), want.to_numpy(), atol=1e-5)
    assert main(["predict", str(crop), str(whole), str(images), "--out",
                 str(tmp_path / "x.csv"), "--weights", "1"]) == 1
