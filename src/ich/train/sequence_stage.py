"""Stage 2: the study sequence model over the ordered slice embeddings of each series.

Input per series: features (T, D+6) from :func:`ich.train.embeddings.sequence_features` and the
z-spacing (T,); targets: the slice labels (T, 6) and the study labels (6,) = max over slices.
Loss: the configured loss (``loss`` section, by default the metric's weighted BCE) on slice
outputs plus ``study_loss_weight`` x the same on the study output. Random-window and reversal
augmentation come from ``SequenceDataset(train=True)``.
The best epoch by validation weighted log loss (slice level) is kept as ``sequence_best.pt``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from ich.config import RunConfig
from ich.data.sequences import SequenceDataset, collate_sequences
from ich.eval.metrics import weighted_log_loss
from ich.labels import LABELS
from ich.models.sequence import SequenceModel
from ich.train.checkpoint import save_checkpoint
from ich.train.common import MetricsLog, weighted_bce
from ich.train.embeddings import FEATURES
from ich.train.losses import LossFn, build_loss
from ich.train.schedule import lr_at


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


def sequence_model_args(cfg: RunConfig, in_dim: int) -> dict[str, Any]:
    """Keyword arguments that rebuild the sequence model (stored in the checkpoint)."""
    s = cfg.sequence
    return {
        "in_dim": in_dim,
        "kind": s.kind,
        "hidden": s.hidden,
        "layers": s.layers,
        "dropout": s.dropout,
    }


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
    """``loss_fn`` on real (unpadded) slices + ``study_weight`` x ``loss_fn`` on the study.

    Args:
        slice_logits: (B, T, 6). study_logits: (B, 6). y: (B, T, 6). mask: (B, T) bool.
        loss_fn: The run's loss (:func:`ich.train.losses.build_loss`); the metric's BCE by default.
    """
    loss = loss_fn(slice_logits[mask], y[mask])
    y_study = torch.where(mask[..., None], y, torch.zeros_like(y)).amax(dim=1)  # (B, 6)
    return loss + study_weight * loss_fn(study_logits, y_study)


@torch.no_grad()
def predict_series(
    model: SequenceModel, data: SeriesData, series: list[str], cfg: RunConfig
) -> dict[str, np.ndarray]:
    """Sequence-model probabilities per slice (T, 6) for each series in ``series``."""
    model.eval()
    out: dict[str, np.ndarray] = {}
    pos = 0
    for batch in _loader(data, series, cfg, train=False, epoch=0):
        feats, z, _, mask = _batch(batch)
        probs = torch.sigmoid(model(feats, z, mask)[0]).numpy()  # (B, T, 6)
        for b in range(len(feats)):
            uid = series[pos]
            out[uid] = probs[b, : int(mask[b].sum())]
            pos += 1
    return out


def _score(probs: dict[str, np.ndarray], data: SeriesData) -> float:
    y = np.concatenate([data.labels[s] for s in probs])
    p = np.concatenate([probs[s] for s in probs])
    return weighted_log_loss(y, p)


def _sequence_epoch(
    model: SequenceModel,
    opt: torch.optim.Optimizer,
    loader: DataLoader,
    cfg: RunConfig,
    step: int,
    total: int,
) -> tuple[float, int]:
    """One training pass; returns (mean loss, optimizer steps taken so far)."""
    model.train()
    loss_fn = build_loss(cfg.loss)
    loss_sum, n = 0.0, 0
    for batch in loader:
        feats, z, y, mask = _batch(batch)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, total, cfg.sequence.lr, "cosine", 0.05, 0.01)
        slice_logits, study_logits = model(feats, z, mask)  # (B, T, 6), (B, 6)
        loss = sequence_loss(
            slice_logits, study_logits, y, mask, cfg.sequence.study_loss_weight, loss_fn
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        loss_sum, n = loss_sum + float(loss.item()), n + 1
    return loss_sum / max(n, 1), step


def train_sequence_model(
    cfg: RunConfig,
    data: SeriesData,
    train_series: list[str],
    val_series: list[str],
    run_dir: Path,
    describe: dict[str, Any],
) -> SequenceResult:
    """Train the sequence model; save ``checkpoints/sequence_best.pt``; log to metrics.jsonl.

    Runs on the CPU in one process: the model is small and the inputs are precomputed.
    """
    torch.manual_seed(cfg.train.seed)
    margs = sequence_model_args(cfg, next(iter(data.features.values())).shape[1])
    model = SequenceModel(**margs)
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.sequence.lr, weight_decay=cfg.sequence.weight_decay
    )
    total = -(-len(train_series) // cfg.sequence.batch_size) * cfg.sequence.epochs
    log = MetricsLog(run_dir)
    best_path = Path(run_dir) / "checkpoints" / "sequence_best.pt"
    best, bad, step = None, 0, 0
    val_probs: dict[str, np.ndarray] = {}
    for epoch in range(cfg.sequence.epochs):
        t0 = time.time()
        loader = _loader(data, train_series, cfg, train=True, epoch=epoch)
        loss, step = _sequence_epoch(model, opt, loader, cfg, step, total)
        record = {"stage": "sequence", "epoch": epoch + 1, "step": step, "split": "train"}
        log.write({**record, "loss": loss})
        probs = predict_series(model, data, val_series, cfg) if val_series else {}
        wll = _score(probs, data) if probs else None
        if wll is not None:
            log.write({**record, "split": "val", "loss": wll, "wll": wll})
        improved = wll is None or best is None or wll < best
        bad = 0 if improved else bad + 1
        if improved:
            best, val_probs = wll, probs
            payload = {
                "kind": "sequence",
                "model": model.state_dict(),
                "model_args": margs,
                **describe,
                "features": FEATURES,
                "epoch": epoch + 1,
                "step": step,
                "best_metric": wll,
            }
            save_checkpoint(best_path, payload)
        vtxt = f"  val wll {wll:.4f}" if wll is not None else ""
        mark = "  *best" if improved and wll is not None else ""
        print(
            f"sequence epoch {epoch + 1}/{cfg.sequence.epochs}  train loss {loss:.4f}"
            f"{vtxt}  ({time.time() - t0:.1f} s){mark}",
            flush=True,
        )
        if cfg.sequence.patience is not None and bad >= cfg.sequence.patience:
            break
    log.close()
    return SequenceResult(best_path, best, val_probs)


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
    for j, name in enumerate(LABELS):
        frame[name] = y[:, j]
    for j, name in enumerate(LABELS):
        frame[f"p_{name}"] = slice_probs[idx, j]
    for j, name in enumerate(LABELS):
        frame[f"q_{name}"] = q[:, j]
    return frame


def run_stage2(
    cfg: RunConfig, cache: Any, folds: np.ndarray, run_dir: Path, device: torch.device,
    features: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, object]:
    """Embeddings -> sequence model -> out-of-fold table.

    Args:
        features: (embeddings, logits) of every cache row, e.g. out of fold from k slice
            models (:mod:`ich.train.foldset`); by default this run's ``slice_best.pt`` embeds
            every slice (flip TTA) and they are saved under ``RUN/oof``.
    """
    from ich.train.embeddings import save_embeddings, sequence_features
    from ich.train.loop import describe
    from ich.train.runner import _write_frame

    run_dir = Path(run_dir)
    if features is None:
        emb, logits = embed_with_run(cfg, cache, run_dir, device)
        save_embeddings(
            run_dir / "oof" / "slice_embeddings.npz",
            cache.catalog["image_id"].to_numpy(),
            folds,
            emb,
            logits,
        )
    else:
        emb, logits = features
    data = build_series_data(cache, folds, sequence_features(emb, logits))
    labelled = {s for s, idx in data.indices.items() if not np.isnan(cache.labels[idx]).any()}
    val = sorted(s for s in labelled if data.fold[s] == cfg.data.fold)
    train = sorted(s for s in labelled if data.fold[s] != cfg.data.fold)
    # The same self-description as the slice checkpoints (resolved config of this stage,
    # windows, offsets, input size, crop), plus what stage 2 adds.
    info = {
        **describe(cfg, cache),
        "slice_checkpoint": "slice_best.pt",
        "tta_flip": cfg.sequence.tta_flip,
    }
    res = train_sequence_model(cfg, data, train, val, run_dir, info)
    out: dict[str, object] = {"sequence_best": str(res.best_path), "sequence_wll": res.best_wll}
    if res.val_probs:
        probs = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
        frame = oof_frame(cache, folds, probs, data, res.val_probs)
        out["oof_predictions"] = str(_write_frame(frame, run_dir / "oof_predictions.parquet"))
        y = frame[list(LABELS)].to_numpy()
        out["slice_wll_tta"] = weighted_log_loss(y, frame[[f"p_{n}" for n in LABELS]].to_numpy())
    return out


def embed_with_run(
    cfg: RunConfig, cache: Any, run_dir: Path, device: torch.device,
    indices: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and logits of ``indices`` (default all) by the run's ``slice_best.pt``."""
    from ich.train.checkpoint import load_checkpoint, load_slice_model
    from ich.train.embeddings import extract_embeddings
    from ich.train.loop import channel_spec

    model = load_slice_model(load_checkpoint(Path(run_dir) / "checkpoints" / "slice_best.pt"))
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
