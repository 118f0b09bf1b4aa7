"""Stage 2: the study sequence model over the ordered slice embeddings of each series.

Input per series: features (T, D+6), or (T, 6) with ``sequence.features: logits``, from
:func:`ich.runs.embed.sequence_features` and the z-spacing (T,); targets: the slice labels
(T, 6) and the study labels (6,) = max over slices.
Loss: the metric's weighted BCE on slice outputs plus ``study_loss_weight`` x the same on the
study output. Random-window and reversal augmentation come from ``SequenceDataset(train=True)``.
The best epoch by validation weighted log loss (slice level) is kept as
``sequence_best.safetensors``, with the temperature that calibrates it on the validation fold
(:mod:`ich.train.calibrate`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from ich.config import RunConfig
from ich.data.sequences import SequenceDataset, collate_sequences
from ich.data.tables import write_frame
from ich.eval.metrics import weighted_log_loss
from ich.labels import LABELS, label_weights
from ich.models.sequence import SequenceEnsemble, SequenceModel, StudyModel, read_both_ways
from ich.models.spec import ModelSpec
from ich.runs.checkpoint import (
    MODEL_SUFFIX,
    load_model_file,
    load_slice_model,
    save_model,
    sequence_member,
)
from ich.runs.embed import sequence_features
from ich.train.calibrate import fit_temperature, scale_probabilities
from ich.train.common import MetricsLog, weighted_bce
from ich.train.describe import channel_spec, sequence_spec
from ich.train.distributed import DistInfo
from ich.train.embeddings import (
    embedding_source,
    extract_embeddings,
    reusable_embeddings,
    save_embeddings,
)
from ich.train.epoch import EpochEnd, end_epoch
from ich.train.losses import LossFn, build_loss
from ich.train.schedule import lr_at
from ich.train.state import EvalResult, TrainState


@dataclass
class SeriesData:
    """Per-series arrays for stage 2, keyed by ``series_instance_uid``."""

    features: dict[str, np.ndarray]  # (T, F)
    z_spacing: dict[str, np.ndarray]  # (T,)
    labels: dict[str, np.ndarray]  # (T, 6)
    indices: dict[str, np.ndarray]  # (T,) cache indices in slice order
    fold: dict[str, int]


@dataclass
class SequenceResult:
    """What stage 2 leaves behind: the checkpoint and per-slice probabilities on validation."""

    best_path: Path
    best_wll: float | None
    val_probs: dict[str, np.ndarray]  # series -> (T, 6)
    temperature: float = 1.0


def _loader(
    data: SeriesData, series: list[str], cfg: RunConfig, train: bool, epoch: int
) -> DataLoader:
    ds = SequenceDataset(
        data.features,
        data.z_spacing,
        data.labels,
        series,
        train=train,
        max_len=cfg.sequence.max_len or 1_000_000,
    )
    gen = torch.Generator().manual_seed(cfg.train.seed * 7919 + epoch)
    return DataLoader(
        ds,
        batch_size=cfg.sequence.batch_size,
        shuffle=train,
        generator=gen,
        collate_fn=collate_sequences,
        num_workers=0,
    )


def _batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(feats (B,T,F), z (B,T), y (B,T,6), mask (B,T) bool) from a collated batch."""
    if isinstance(batch, dict):
        return batch["features"], batch["z_spacing"], batch["labels"], batch["mask"].bool()
    feats, z, y, mask = batch[:4]
    return feats, z, y, mask.bool()


def sequence_loss(
    slice_logits: torch.Tensor,
    study_logits: torch.Tensor,
    y: torch.Tensor,
    mask: torch.Tensor,
    study_weight: float,
    loss_fn: LossFn = weighted_bce,
) -> torch.Tensor:
    """Weighted BCE on real (unpadded) slices + ``study_weight`` x weighted BCE on the study.

    Args:
        slice_logits: (B, T, K). study_logits: (B, K). y: (B, T, K). mask: (B, T) bool.
    """
    loss = loss_fn(slice_logits[mask], y[mask])
    y_study = torch.where(mask[..., None], y, torch.zeros_like(y)).amax(dim=1)  # (B, K)
    return loss + study_weight * loss_fn(study_logits, y_study)


@torch.no_grad()
def predict_series(
    model: StudyModel, data: SeriesData, series: list[str], cfg: RunConfig
) -> dict[str, np.ndarray]:
    """Sequence-model probabilities per slice (T, K) for each series in ``series``, read both
    ways as at inference (:func:`ich.models.sequence.read_both_ways`)."""
    model.eval()
    out: dict[str, np.ndarray] = {}
    pos = 0
    for batch in _loader(data, series, cfg, train=False, epoch=0):
        feats, z, _, mask = _batch(batch)
        probs = torch.sigmoid(read_both_ways(model, feats, z, mask)[0]).numpy()  # (B, T, K)
        for b in range(len(feats)):
            uid = series[pos]
            out[uid] = probs[b, : int(mask[b].sum())]
            pos += 1
    return out


def _score(probs: dict[str, np.ndarray], data: SeriesData, labels: Sequence[str]) -> float:
    y = np.concatenate([data.labels[s] for s in probs])
    p = np.concatenate([probs[s] for s in probs])
    return weighted_log_loss(y, p, labels=labels)


def make_sequence_optimizer(model: SequenceModel, cfg: RunConfig) -> torch.optim.Optimizer:
    """The stage-2 optimizer (AdamW); its learning rate is set every step by the schedule."""
    s = cfg.sequence
    return torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)


def sequence_lr(step: int, total_steps: int, cfg: RunConfig) -> float:
    """The stage-2 learning rate at optimizer step ``step`` (``SequenceConfig`` schedule)."""
    s = cfg.sequence
    return lr_at(step, total_steps, s.lr, s.schedule, s.warmup_frac, s.min_lr_frac)


def sequence_epoch(
    model: SequenceModel,
    opt: torch.optim.Optimizer,
    loader: DataLoader,
    cfg: RunConfig,
    state: TrainState,
    total_steps: int,
    labels: Sequence[str] = LABELS,
    noise_scale: torch.Tensor | None = None,
) -> float:
    """One training pass; advances ``state.step``; returns the mean loss (one sync, at the end).

    The loss weighs the run's ``labels`` as the metric does (``any`` x2 only when present).
    ``noise_scale`` (F,): Gaussian noise of this standard deviation is added to each input
    feature (``sequence.feature_noise``), see :func:`feature_noise_scale`.
    """
    loss_fn = build_loss(cfg.loss, label_weights(labels))
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64)
    n = 0
    for batch in loader:
        feats, z, y, mask = _batch(batch)
        if noise_scale is not None:
            feats = feats + torch.randn_like(feats) * noise_scale
        for group in opt.param_groups:
            group["lr"] = sequence_lr(state.step, total_steps, cfg)
        slice_logits, study_logits = model(feats, z, mask)  # (B, T, K), (B, K)
        loss = sequence_loss(
            slice_logits, study_logits, y, mask, cfg.sequence.study_loss_weight, loss_fn
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.sequence.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.sequence.grad_clip)
        opt.step()
        state.step += 1
        loss_sum += loss.detach().double()
        n += 1
    return float(loss_sum.item()) / max(n, 1)


def feature_noise_scale(
    data: SeriesData, series: list[str], noise: float
) -> torch.Tensor | None:
    """Per-feature noise level: ``noise`` x each feature's spread over the training slices.

    Why: a single run embeds the slices its own CNN trained on, so stage 2 learns from
    embeddings and logits cleaner and more confident than any new scan will give it, and learns
    to trust (and spread along the series) every confident slice. Noise on its inputs during
    training teaches it how unreliable they are on unseen data.
    """
    if noise <= 0 or not series:
        return None
    feats = np.concatenate([data.features[s] for s in series])
    return torch.from_numpy(noise * feats.std(axis=0).astype(np.float32))


def train_sequence_model(
    cfg: RunConfig,
    data: SeriesData,
    train_series: list[str],
    val_series: list[str],
    run_dir: Path,
    spec: ModelSpec,
) -> SequenceResult:
    """Train the sequence model (or ``sequence.members`` of them, seeds ``train.seed``, +1, ...,
    kept as one :class:`SequenceEnsemble`); save ``checkpoints/sequence_best.safetensors``; log
    to metrics.jsonl.

    Runs on the CPU in one process: the model is small and the inputs are precomputed.
    """
    best_path = Path(run_dir) / "checkpoints" / f"sequence_best{MODEL_SUFFIX}"
    k = cfg.sequence.members
    if k == 1:
        return _train_member(cfg, data, train_series, val_series, run_dir, spec, best_path)
    assert spec.sequence_arch is not None
    members = []
    for i in range(k):
        print(f"  sequence model {i + 1}/{k} (seed {cfg.train.seed + i})", flush=True)
        cfg_i = replace(cfg, train=replace(cfg.train, seed=cfg.train.seed + i))
        path = best_path.with_name(f"sequence_member{i}{MODEL_SUFFIX}")
        _train_member(cfg_i, data, train_series, val_series, run_dir, spec, path)
        member = sequence_member(spec.sequence_arch, len(spec.labels))
        member.load_state_dict(load_model_file(path)[0])
        members.append(member)
        path.unlink()
    ensemble = SequenceEnsemble(members).eval()
    save_model(best_path, ensemble.state_dict(),
               replace(spec, sequence_arch=replace(spec.sequence_arch, members=k)))
    probs = predict_series(ensemble, data, val_series, cfg) if val_series else {}
    wll = _score(probs, data, spec.labels) if probs else None
    if wll is not None:
        print(f"  sequence ensemble of {k}: validation weighted log loss {wll:.4f}", flush=True)
    return SequenceResult(best_path, wll, probs)


def _train_member(cfg: RunConfig, data: SeriesData, train_series: list[str],
                  val_series: list[str], run_dir: Path, spec: ModelSpec, best_path: Path
                  ) -> SequenceResult:
    """Train one sequence model (seed ``train.seed``), its best epoch saved at ``best_path``."""
    torch.manual_seed(cfg.train.seed)
    assert spec.sequence_arch is not None
    model = sequence_member(spec.sequence_arch, len(spec.labels))
    opt = make_sequence_optimizer(model, cfg)
    total = -(-len(train_series) // cfg.sequence.batch_size) * cfg.sequence.epochs
    log = MetricsLog(run_dir)
    state = TrainState()
    noise = feature_noise_scale(data, train_series, cfg.sequence.feature_noise)
    val_probs: dict[str, np.ndarray] = {}
    probs: dict[str, np.ndarray] = {}

    def save_best() -> None:
        nonlocal val_probs
        val_probs = probs
        save_model(best_path, model.state_dict(), spec)

    how = EpochEnd("sequence", cfg.sequence.epochs, cfg.sequence.patience, save_best)
    while state.epoch < cfg.sequence.epochs:
        t0 = time.time()
        loader = _loader(data, train_series, cfg, train=True, epoch=state.epoch)
        loss = sequence_epoch(model, opt, loader, cfg, state, total, spec.labels, noise)
        probs = predict_series(model, data, val_series, cfg) if val_series else {}
        val = EvalResult(_score(probs, data, spec.labels), labels=spec.labels) if probs else None
        state.epoch += 1
        if end_epoch(how, state, log, DistInfo(), loss, val, time.time() - t0):
            break
    log.close()
    return SequenceResult(best_path, state.best, val_probs)


def calibrate_sequence_model(
    res: SequenceResult, data: SeriesData, labels: Sequence[str]
) -> SequenceResult:
    """Fit the temperature on the validation fold and write it into the model file.

    Returns the result at that temperature (validation probabilities and weighted log loss), or
    ``res`` unchanged when the fold cannot tell (:func:`ich.train.calibrate.fit_temperature`).
    """
    y = np.concatenate([data.labels[s] for s in res.val_probs])
    p = np.concatenate([res.val_probs[s] for s in res.val_probs])
    temperature = fit_temperature(y, p, labels)
    if temperature is None:
        print("  sequence model: no temperature fitted (the validation fold has no positive or "
              "no negative slice)", flush=True)
        return res
    state, spec = load_model_file(res.best_path)
    assert spec.sequence_arch is not None
    arch = replace(spec.sequence_arch, temperature=temperature)
    save_model(res.best_path, state, replace(spec, sequence_arch=arch))
    probs = {s: scale_probabilities(v, temperature) for s, v in res.val_probs.items()}
    wll = _score(probs, data, labels)
    # ``best_wll`` is the validation score of these very probabilities at temperature 1.
    print(f"  sequence model: temperature {temperature:.2f} fitted on the validation fold "
          f"(weighted log loss {res.best_wll:.4f} -> {wll:.4f})", flush=True)
    return SequenceResult(res.best_path, wll, probs, temperature)


def build_series_data(cache: Any, folds: np.ndarray, feats: np.ndarray) -> SeriesData:
    """Group per-slice rows (cache index order) into series in slice order."""
    cat = cache.catalog
    zsp = cat["z_spacing"].to_numpy(dtype=np.float32)
    zsp = np.nan_to_num(zsp, nan=float(np.nanmedian(zsp)) if np.isfinite(zsp).any() else 5.0)
    labels = np.nan_to_num(cache.labels.astype(np.float32), nan=0.0)
    data = SeriesData({}, {}, {}, {}, {})
    for uid, idx in cache.series_index().items():
        idx = np.asarray(idx)
        data.features[uid] = feats[idx]
        data.z_spacing[uid] = zsp[idx]
        data.labels[uid] = labels[idx]
        data.indices[uid] = idx
        data.fold[uid] = int(folds[idx[0]])
    return data


def oof_frame(
    cache: Any,
    folds: np.ndarray,
    slice_probs: np.ndarray,
    data: SeriesData,
    seq_probs: dict[str, np.ndarray],
) -> pd.DataFrame:
    """Validation-fold rows: ids, fold, true labels, ``p_*`` (slice CNN) and ``q_*`` (sequence)."""
    idx = np.concatenate([data.indices[s] for s in seq_probs])
    q = np.concatenate([seq_probs[s] for s in seq_probs])
    cols = ["image_id", "patient_id", "study_instance_uid", "series_instance_uid", "slice_index"]
    frame = cache.catalog.iloc[idx][cols].reset_index(drop=True)
    frame["fold"] = folds[idx]
    y = cache.labels[idx]
    for j, name in enumerate(cache.label_names):
        frame[name] = y[:, j]
    for j, name in enumerate(cache.label_names):
        frame[f"p_{name}"] = slice_probs[idx, j]
    for j, name in enumerate(cache.label_names):
        frame[f"q_{name}"] = q[:, j]
    return frame


def run_stage2(
    cfg: RunConfig, cache: Any, folds: np.ndarray, run_dir: Path, device: torch.device,
    features: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, object]:
    """Embeddings -> sequence model -> out-of-fold table.

    Args:
        features: (embeddings, logits) of every cache row, e.g. out of fold from k slice
            models (:mod:`ich.train.foldset`); by default this run's ``slice_best`` embeds
            every slice (flip TTA) and they are saved under ``RUN/oof``.
    """
    run_dir = Path(run_dir)
    emb, logits = features if features is not None else run_features(cfg, cache, folds, run_dir,
                                                                      device)
    data = build_series_data(cache, folds, sequence_features(emb, logits, cfg.sequence.features))
    labelled = {s for s, idx in data.indices.items() if not np.isnan(cache.labels[idx]).any()}
    val = sorted(s for s in labelled if data.fold[s] == cfg.data.fold)
    train = sorted(s for s in labelled if data.fold[s] != cfg.data.fold)
    # The same windows, offsets, input size and crop as the slice model, plus its architecture.
    in_dim = next(iter(data.features.values())).shape[1]
    spec = sequence_spec(cfg, cache, in_dim)
    res = train_sequence_model(cfg, data, train, val, run_dir, spec)
    out: dict[str, object] = {"sequence_best": str(res.best_path), "sequence_wll": res.best_wll}
    if cfg.sequence.temperature_scaling and res.val_probs:
        raw, res = res.best_wll, calibrate_sequence_model(res, data, spec.labels)
        out["sequence_wll"], out["sequence_wll_uncalibrated"] = res.best_wll, raw
    if res.val_probs:
        probs = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
        frame = oof_frame(cache, folds, probs, data, res.val_probs)
        out["oof_predictions"] = str(write_frame(frame, run_dir / "oof_predictions.parquet"))
        names = list(cache.label_names)
        out["slice_wll_tta"] = weighted_log_loss(
            frame[names].to_numpy(), frame[[f"p_{n}" for n in names]].to_numpy(), labels=names
        )
    return out


def run_features(
    cfg: RunConfig, cache: Any, folds: np.ndarray, run_dir: Path, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """Every slice's embeddings and logits by the run's ``slice_best``, kept in ``RUN/oof``.

    Embedding every slice takes minutes on a CPU, training stage 2 seconds: when the saved file
    was made by this very checkpoint from the same slices (``ich train --stage sequence`` again,
    e.g. with another sequence config), it is read instead.
    """
    path = run_dir / "oof" / "slice_embeddings.npz"
    source = embedding_source(run_dir / "checkpoints" / f"slice_best{MODEL_SUFFIX}", cache,
                              channel_spec(cfg), cfg.data.input_size, cfg.sequence.tta_flip)
    ids = cache.catalog["image_id"].to_numpy()
    saved = reusable_embeddings(path, source, ids)
    if saved is None:
        emb, logits = embed_with_run(cfg, cache, run_dir, device)
    else:
        print(f"  embeddings: reusing {path} (made by this slice checkpoint)")
        emb, logits = saved["embeddings"], saved["logits"]
        if np.array_equal(saved["fold"], folds):
            return emb, logits
    save_embeddings(path, ids, folds, emb, logits, source)  # new, or the folds were remade
    return emb, logits


def embed_with_run(
    cfg: RunConfig, cache: Any, run_dir: Path, device: torch.device,
    indices: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and logits of ``indices`` (default all) by the run's ``slice_best``."""
    model, _ = load_slice_model(Path(run_dir) / "checkpoints" / f"slice_best{MODEL_SUFFIX}")
    return extract_embeddings(
        model,
        cache,
        channel_spec(cfg),
        cfg.data.input_size,
        device,
        cfg.sequence.embed_batch_size,
        cfg.train.workers,
        cfg.sequence.tta_flip,
        indices,
    )
