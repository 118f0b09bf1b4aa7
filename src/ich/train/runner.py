"""A whole training run: run folder, folds, stage 1 (slice CNN), stage 2 (sequence model).

Run folder layout::

    RUN/config.yaml              resolved configuration (the single source of the run)
    RUN/train_prevalence.json    label prevalence of the training rows (the base-rate baseline)
    RUN/folds.csv                image_id, patient_id, study/series uid, fold per cache row
    RUN/metrics.jsonl            one JSON per logged step / epoch, both stages
    RUN/tensorboard/             TensorBoard scalars (when tensorboard is installed)
    RUN/checkpoints/              model files (weights + ModelSpec, safetensors):
                                 slice_best, slice_last, sequence_best; and
                                 slice_last.state.pt (optimizer, RNG: --resume only)
    RUN/oof/slice_embeddings.npz image_id, fold, embeddings (N, D), logits (N, 6) (flip TTA)
    RUN/oof_predictions.parquet  validation-fold slices: ids, fold, true labels, p_* (slice
                                 model) and q_* (sequence model) probabilities
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ich.atomic import atomic_write_text
from ich.config import RunConfig, save_config
from ich.data.cache import SliceCache
from ich.data.folds import make_folds, subsample_patients, undersample_negatives
from ich.data.tables import write_frame
from ich.errors import CheckpointError, ConfigError
from ich.eval.metrics import study_level
from ich.train.common import resolve_device, seed_everything
from ich.train.distributed import DistInfo, barrier, cleanup_distributed, init_distributed
from ich.train.loop import train_slice_model
from ich.train.sequence_stage import run_stage2
from ich.train.state import TrainSummary

FOLD_COLUMNS = (
    "image_id",
    "patient_id",
    "study_instance_uid",
    "series_instance_uid",
    "slice_index",
)


def load_or_make_folds(cfg: RunConfig, cache: SliceCache, run_dir: Path, write: bool) -> np.ndarray:
    """Fold per cache row: read ``RUN/folds.csv`` when present (resume, stage 2), else make
    them (grouped by patient, stratified) and save them with the run."""
    path = run_dir / "folds.csv"
    cat = cache.catalog
    if path.is_file():
        saved = pd.read_csv(path)
        mapped = cat["image_id"].map(dict(zip(saved["image_id"], saved["fold"], strict=True)))
        if mapped.isna().any():
            raise CheckpointError(f"{path}: does not cover every slice of the cache")
        return mapped.to_numpy(dtype=np.int64)
    folds_s = make_folds(cat, k=cfg.data.folds, seed=cfg.data.fold_seed, labels=cache.label_names)
    folds = np.asarray(folds_s, dtype=np.int64)
    if write:
        frame = cat[list(FOLD_COLUMNS)].copy()
        frame["fold"] = folds
        write_frame(frame, path)
    return folds


def split_indices(
    cfg: RunConfig, cache: SliceCache, folds: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Train / validation cache indices; only labelled slices take part."""
    labelled = ~np.isnan(cache.labels).any(axis=1)
    if not labelled.any():
        raise ConfigError(
            f"{cache.root if hasattr(cache, 'root') else 'cache'}: no labelled slices; "
            "build the cache with --labels to train"
        )
    if cfg.data.fold >= cfg.data.folds:
        raise ConfigError(f"data.fold={cfg.data.fold} but data.folds={cfg.data.folds}")
    if cfg.data.subsample is not None:  # whole patients, stratified (ich.data.folds)
        labelled &= subsample_patients(cache.catalog, cfg.data.subsample, cfg.data.fold_seed,
                                       cache.label_names)
    val = (folds == cfg.data.fold) & labelled
    train = np.flatnonzero((folds != cfg.data.fold) & labelled)
    if cfg.data.undersample_negatives is not None:
        train = undersample_negatives(train, cache.labels, cfg.data.undersample_negatives,
                                      cfg.data.fold_seed)
    return train, np.flatnonzero(val)


def write_sampling(
    cfg: RunConfig, cache: SliceCache, train_idx: np.ndarray, val_idx: np.ndarray, run_dir: Path
) -> Path:
    """``RUN/sampling.json``: what the slice model was trained and validated on, and how drawn
    (subsample, negative undersampling, oversampling), so a run's numbers can be read right."""
    labelled = int((~np.isnan(cache.labels).any(axis=1)).sum())
    positives = int((cache.labels[train_idx].max(axis=1) >= 0.5).sum()) if len(train_idx) else 0
    data = {
        "labelled_slices": labelled,
        "subsample": cfg.data.subsample,
        "undersample_negatives": cfg.data.undersample_negatives,
        "oversample": cfg.data.oversample,
        "oversample_positive": cfg.data.oversample_positive if cfg.data.oversample else None,
        "oversample_rare": cfg.data.oversample_rare if cfg.data.oversample else None,
        "train_slices": len(train_idx),
        "train_positive_slices": positives,
        "val_slices": len(val_idx),
        "train_patients": int(cache.catalog["patient_id"].iloc[train_idx].nunique()),
        "val_patients": int(cache.catalog["patient_id"].iloc[val_idx].nunique()),
    }
    return atomic_write_text(run_dir / "sampling.json", json.dumps(data, indent=2))


def prepare_run(
    cfg: RunConfig, cache_dir: Path, run_dir: Path, info: DistInfo
) -> tuple[SliceCache, np.ndarray]:
    """Open the cache, create the run folder, save the config and folds (rank 0)."""
    cache = SliceCache(Path(cache_dir))
    if not cfg.provenance:
        cfg.provenance = f"preprocessing cache {Path(cache_dir).resolve()}"
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "checkpoints").mkdir(exist_ok=True)
        save_config(cfg, run_dir)
        load_or_make_folds(cfg, cache, run_dir, write=True)
    barrier(info)
    return cache, load_or_make_folds(cfg, cache, run_dir, write=False)


def write_train_prevalence(cache: SliceCache, train_idx: np.ndarray, run_dir: Path) -> Path:
    """Save the training rows' label prevalence (slice and study level) with the run.

    The constant base-rate predictor that evaluation compares against must be fitted on the
    training rows, not on the rows it is scored on.
    """
    y = cache.labels[train_idx]
    studies = cache.catalog["study_instance_uid"].to_numpy()[train_idx]
    y_study = study_level(y, y, studies, cache.label_names)[0]
    data = {
        level: {name: float(v) for name, v in zip(cache.label_names, arr.mean(axis=0), strict=True)}
        for level, arr in (("slice", y), ("study", y_study))
    }
    path = run_dir / "train_prevalence.json"
    return atomic_write_text(path, json.dumps(data, indent=2))


def run_training(
    cfg: RunConfig,
    cache_dir: Path,
    run_dir: Path,
    stages: tuple[str, ...] | None = None,
    resume: bool = False,
) -> TrainSummary:
    """Train the configured stages and return a summary (paths and validation scores).

    Under ``torchrun`` (``WORLD_SIZE > 1``) stage 1 runs data-parallel; stage 2 (a small model
    on precomputed embeddings) runs on rank 0 only.
    """
    stages = stages or tuple(cfg.train.stages)
    run_dir = Path(run_dir)
    device = resolve_device(cfg.train.device, int(os.environ.get("LOCAL_RANK", "0")))
    info = init_distributed(device)
    try:
        seed_everything(cfg.train.seed + info.rank, cfg.train.deterministic)
        cache, folds = prepare_run(cfg, cache_dir, run_dir, info)
        train_idx, val_idx = split_indices(cfg, cache, folds)
        if info.is_main:
            write_train_prevalence(cache, train_idx, run_dir)
            write_sampling(cfg, cache, train_idx, val_idx, run_dir)
        if info.is_main:
            print(
                f"  device {device} x {info.world_size} process(es); slices train "
                f"{len(train_idx)}, validation {len(val_idx)} (fold {cfg.data.fold})",
                flush=True,
            )
        scores: dict[str, float | None] = {}
        slice_best = sequence_best = oof = domain = None
        if "slice" in stages:
            res = train_slice_model(cfg, cache, train_idx, val_idx, run_dir, device, info, resume)
            slice_best, scores["slice_wll"] = res.best_path, res.best_wll
        barrier(info)
        if "sequence" in stages and info.is_main:
            stage2 = run_stage2(cfg, cache, folds, run_dir, device)
            sequence_best = Path(str(stage2["sequence_best"]))
            oof = Path(str(stage2["oof_predictions"])) if "oof_predictions" in stage2 else None
            for key in ("sequence_wll", "sequence_wll_uncalibrated", "slice_wll_tta"):
                value = stage2.get(key)
                scores[key] = None if value is None else float(value)  # type: ignore[arg-type]
            from ich.domain import fit_run_domain  # how far new series lie from these

            domain = fit_run_domain(cache, folds, run_dir, cfg.data.fold)
        barrier(info)
        return TrainSummary(
            run_dir=run_dir, device=str(device), train_slices=len(train_idx),
            val_slices=len(val_idx), slice_best=slice_best, sequence_best=sequence_best,
            oof_predictions=oof, domain=domain,
            scores=scores,
        )
    finally:
        cleanup_distributed(info)
