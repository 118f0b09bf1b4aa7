"""Predictor, heatmaps, batch prediction and ``ich predict`` on a tiny trained phantom run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ich.cli import main
from ich.data.cache import SliceCache
from ich.dicom.io import read_slice
from ich.errors import CacheError, CheckpointError
from ich.inference import PHANTOM_NOTE, Predictor, describe_training_data
from ich.labels import LABELS
from ich.predict import check_compatible, predict_cache


def _series_files(cohort: Path) -> dict[str, list[Path]]:
    patients = pd.read_csv(cohort / "patients.csv")
    out: dict[str, list[Path]] = {}
    for row in patients.itertuples():
        out.setdefault(row.series_instance_uid, []).append(
            cohort / "images" / f"{row.image_id}.dcm"
        )
    return out


@pytest.fixture(scope="module")
def predictor(tiny_run: Path) -> Predictor:
    return Predictor.from_run(tiny_run)


def test_predict_slices_orders_by_position_whatever_the_input_order(
    predictor: Predictor, tiny_cohort: Path
) -> None:
    files = next(iter(_series_files(tiny_cohort).values()))
    slices = [read_slice(f) for f in files]
    rng = np.random.default_rng(0)
    results = []
    for _ in range(2):
        perm = rng.permutation(len(slices))
        shuffled = [slices[i] for i in perm]
        pred = predictor.predict_slices([s.hu for s in shuffled], [s.meta for s in shuffled])
        assert np.all(np.diff(pred.z) > 0)
        assert pred.slice_probs.shape == (len(slices), len(LABELS))
        assert pred.study_probs.shape == (len(LABELS),)
        assert np.all((pred.slice_probs > 0) & (pred.slice_probs < 1))
        uids = [shuffled[i].meta.sop_instance_uid for i in pred.order]
        results.append((uids, pred.slice_probs))
    (first, a), (second, b) = results
    assert first == second  # the same anatomical order from two different input orders
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_dicom_path_and_cache_path_give_the_same_predictions(
    predictor: Predictor, tiny_cohort: Path, tiny_cache: Path
) -> None:
    table = predict_cache(predictor, tiny_cache, progress=False)
    uid, files = next(iter(_series_files(tiny_cohort).items()))
    slices = [read_slice(f) for f in files]
    pred = predictor.predict_slices([s.hu for s in slices], [s.meta for s in slices])
    rows = table[table["series_instance_uid"] == uid].sort_values("slice_index")
    np.testing.assert_allclose(
        rows[[f"q_{n}" for n in LABELS]].to_numpy(), pred.slice_probs, atol=1e-4
    )
    np.testing.assert_allclose(
        rows[[f"p_{n}" for n in LABELS]].to_numpy(), pred.cnn_probs, atol=1e-4
    )
    assert set(table.columns) >= {"image_id", "fold", *LABELS}


def test_ensemble_of_one_run_twice_equals_the_run(
    predictor: Predictor, tiny_run: Path, tiny_cache: Path
) -> None:
    cache = SliceCache(tiny_cache)
    idx = next(iter(cache.series_index().values()))
    images, spacing = cache.images(idx), cache.catalog["z_spacing"].to_numpy()[idx]
    single = predictor.predict_preprocessed(images, spacing)
    double = Predictor.from_run([tiny_run, tiny_run]).predict_preprocessed(images, spacing)
    for s, d in zip(single, double, strict=True):
        np.testing.assert_allclose(s, d, atol=1e-6)
    tta = Predictor.from_run(tiny_run, tta=2).predict_preprocessed(images, spacing)
    assert tta[1].shape == single[1].shape and np.all((tta[1] > 0) & (tta[1] < 1))


def test_heatmap_matches_the_slice_and_rejects_unknown_labels(
    predictor: Predictor, tiny_cohort: Path
) -> None:
    files = next(iter(_series_files(tiny_cohort).values()))
    hu = read_slice(files[len(files) // 2]).hu
    heat = predictor.heatmap(hu, "subdural")
    assert heat.shape == hu.shape and heat.dtype == np.float32
    assert float(heat.min()) >= 0.0 and float(heat.max()) <= 1.0
    assert float(heat[hu < -900].mean()) <= float(heat.max())
    with pytest.raises(ValueError, match="unknown label"):
        predictor.heatmap(hu, "bleed")


def test_provenance_comes_from_the_run_config(predictor: Predictor, tiny_cache: Path) -> None:
    prov = predictor.provenance
    assert prov["training_data"] == f"preprocessing cache {tiny_cache.resolve()}"
    assert "not for diagnosis" in prov["note"]
    assert PHANTOM_NOTE not in prov["training_data"]
    assert PHANTOM_NOTE in describe_training_data({"provenance": "synthetic phantom cohort"})


def test_missing_run_and_incompatible_cache_are_named_errors(
    predictor: Predictor, tmp_path: Path, tiny_cache: Path
) -> None:
    with pytest.raises(CheckpointError, match="slice_best"):
        Predictor.from_run(tmp_path)
    cache = SliceCache(tiny_cache)
    info = json.loads((tiny_cache / "cache.json").read_text())
    other = tmp_path / "cache"
    shutil.copytree(tiny_cache, other)
    info["spec"]["crop"] = not info["spec"]["crop"]
    (other / "cache.json").write_text(json.dumps(info))
    check_compatible(predictor, cache)
    with pytest.raises(CacheError, match="crop"):
        check_compatible(predictor, SliceCache(other))


def test_ich_predict_writes_a_complete_submission_and_lists_failures(
    tiny_run: Path, tiny_cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = tmp_path / "test"
    shutil.copytree(tiny_cohort / "images", images)
    (images / "ID_broken.dcm").write_bytes(b"not a dicom file")
    out = tmp_path / "sub.csv"
    assert main(["predict", str(tiny_run), str(images), "--out", str(out), "--workers", "1"]) == 0
    sub = pd.read_csv(out)
    n_files = len(list(images.glob("*.dcm")))
    assert len(sub) == n_files * len(LABELS)
    assert sub["ID"].str.rsplit("_", n=1).str[1].tolist()[:6] == list(LABELS)
    assert sub["Label"].between(1e-6, 1 - 1e-6).all()
    failed = pd.read_csv(out.with_suffix(".failed.csv"))
    assert failed["image_id"].tolist() == ["ID_broken"]
    assert "ID_broken" in set(sub["ID"].str.rsplit("_", n=1).str[0])
    printed = capsys.readouterr().out
    assert "could not be read" in printed
    assert "sub.series.csv" in printed
    series = pd.read_csv(out.with_suffix(".series.csv"))
    assert list(series.columns) == [
        "study_instance_uid", "series_instance_uid", "n_slices", "in_domain", "domain_score",
        *LABELS,
    ]
    patients = pd.read_csv(tiny_cohort / "patients.csv")
    assert sorted(series["series_instance_uid"]) == sorted(patients["series_instance_uid"].unique())
    per_series = patients.groupby("series_instance_uid").size()
    counts = series.set_index("series_instance_uid")["n_slices"]
    assert counts.sort_index().tolist() == per_series.sort_index().tolist()
    assert series[list(LABELS)].stack().between(0, 1).all()
    assert (series["in_domain"] == (series["domain_score"] <= 1.0)).all()


def test_run_has_a_calibrated_domain_model_and_predictions_carry_it(
    predictor: Predictor, tiny_run: Path, tiny_cohort: Path
) -> None:
    info = json.loads((tiny_run / "domain.json").read_text())
    assert info["threshold"] > 0 and info["n_train"] >= 3
    files = next(iter(_series_files(tiny_cohort).values()))
    slices = [read_slice(f) for f in files]
    pred = predictor.predict_slices([s.hu for s in slices], [s.meta for s in slices])
    assert np.isfinite(pred.domain_score) and pred.domain_score >= 0
    assert pred.in_domain == (pred.domain_score <= 1.0)
    # A flat grey "scan" is nothing like the training series: far outside the domain.
    odd = [np.full_like(s.hu, 500.0) for s in slices]
    far = predictor.predict_slices(odd, [s.meta for s in slices])
    assert far.in_domain is False and far.domain_score > 10 * max(pred.domain_score, 0.1)


def test_onnx_runtime_engine_gives_the_torch_predictions(tiny_run: Path, tiny_cache: Path) -> None:
    pytest.importorskip("onnxruntime")
    cache = SliceCache(tiny_cache)
    idx = next(iter(cache.series_index().values()))
    images, spacing = cache.images(idx), cache.catalog["z_spacing"].to_numpy()[idx]
    torch_p = Predictor.from_run(tiny_run, engine="torch")
    onnx_p = Predictor.from_run(tiny_run, engine="onnx")
    assert torch_p.runs[0].onnx is None and onnx_p.runs[0].onnx is not None
    # exporting must leave the PyTorch model (still used for heatmaps) in eval mode
    assert not any(m.training for m in onnx_p.runs[0].slice_model.modules())
    for a, b in zip(
        torch_p.predict_preprocessed(images, spacing),
        onnx_p.predict_preprocessed(images, spacing),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_serving_never_unpickles(tiny_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Model files are safetensors + JSON: loading a run for serving never calls torch.load."""
    import torch

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("torch.load called while loading a model for serving")

    monkeypatch.setattr(torch, "load", refuse)
    predictor = Predictor.from_run(tiny_run, engine="torch")
    assert predictor.runs[0].spec.kind == "slice"


def test_a_run_of_the_old_pickled_format_is_a_named_error(tmp_path: Path) -> None:
    import torch

    (tmp_path / "old" / "checkpoints").mkdir(parents=True)
    torch.save({"format": "ich-checkpoint/1"}, tmp_path / "old" / "checkpoints" / "slice_best.pt")
    with pytest.raises(CheckpointError, match=r"older ich.*retrain"):
        Predictor.from_run(tmp_path / "old")
