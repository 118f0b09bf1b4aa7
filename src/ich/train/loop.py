"""Stage 1: the slice CNN training loop, a plain loop readable top to bottom.

One epoch = a seeded permutation (or weighted draw, when oversampling) of the training slices,
sharded over DDP ranks; AdamW with the learning rate set at every step from
:mod:`ich.train.schedule`; AMP and a GradScaler on CUDA only; gradient clipping; validation on the
held-out fold with the RSNA weighted log loss; ``slice_last.pt`` every epoch (exact resume) and
``slice_best.pt`` when validation improves; early stopping on patience.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ich.config import RunConfig, config_to_dict
from ich.data.augment import make_batch_augment, prepare_batch
from ich.data.cache import SliceCache
from ich.data.datasets import (
    ChannelSpec,
    SliceDataset,
    collate_slices,
    oversample_weights,
    seed_worker,
)
from ich.dicom.windowing import resolve_windows
from ich.errors import CheckpointError
from ich.eval.metrics import per_label_log_loss, weighted_log_loss
from ich.labels import LABELS
from ich.models.slice_cnn import SliceModel, build_slice_model
from ich.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from ich.train.common import MetricsLog, weighted_bce
from ich.train.distributed import DistInfo, broadcast_object, gather_objects, reduce_mean
from ich.train.schedule import lr_at


@dataclass
class SliceResult:
    """What stage 1 leaves behind."""

    best_path: Path
    last_path: Path
    best_wll: float | None
    epochs_run: int
    model: torch.nn.Module


def channel_spec(cfg: RunConfig) -> ChannelSpec:
    """The configured channels (windows x neighbour offsets)."""
    return ChannelSpec(windows=tuple(cfg.data.windows), offsets=tuple(cfg.data.offsets))


def model_args(cfg: RunConfig) -> dict[str, Any]:
    """Keyword arguments that rebuild the slice CNN (stored in checkpoints)."""
    n_chans = len(cfg.data.windows) * len(cfg.data.offsets)
    return {
        "backbone": cfg.model.backbone,
        "in_chans": n_chans,
        "pretrained": cfg.model.pretrained,
        "weights": cfg.model.weights,
        "drop_rate": cfg.model.drop_rate,
    }


def describe(cfg: RunConfig, cache: SliceCache) -> dict[str, Any]:
    """The self-describing part of every checkpoint of this run (see ich.train.checkpoint)."""
    from ich import __version__

    windows = resolve_windows(tuple(cfg.data.windows))
    return {
        "config": config_to_dict(cfg),
        "labels": list(LABELS),
        "windows": [[w.name, float(w.center), float(w.width)] for w in windows],
        "offsets": [int(o) for o in cfg.data.offsets],
        "input_size": int(cfg.data.input_size),
        "preprocess": cache.spec.to_dict(),
        "ich_version": __version__,
    }


def sample_weights(labels: np.ndarray, cfg: RunConfig) -> np.ndarray | None:
    """Per-slice draw weights when ``data.oversample``: positives and rare subtypes more often
    (see :func:`ich.data.datasets.oversample_weights`); None means a plain permutation."""
    if not cfg.data.oversample:
        return None
    return oversample_weights(labels, cfg.data.oversample_positive, cfg.data.oversample_rare)


def epoch_order(n: int, epoch: int, seed: int, weights: np.ndarray | None) -> np.ndarray:
    """Positions drawn for one epoch; a pure function of (seed, epoch) so resume is exact."""
    rng = np.random.default_rng([seed, epoch])
    if weights is None:
        return rng.permutation(n)
    return rng.choice(n, size=n, replace=True, p=weights / weights.sum())


def shard(order: np.ndarray, info: DistInfo, pad: bool) -> np.ndarray:
    """This rank's share; training shards are cut to equal length so ranks step together."""
    if not info.enabled:
        return order
    if pad:
        per = len(order) // info.world_size
        return order[info.rank * per : (info.rank + 1) * per]
    return order[info.rank :: info.world_size]


def make_loader(ds: SliceDataset, order: np.ndarray, cfg: RunConfig, epoch: int) -> DataLoader:
    """A DataLoader over ``order`` with a seeded generator (worker seeds follow from it)."""
    gen = torch.Generator().manual_seed(cfg.train.seed * 1000 + epoch)
    return DataLoader(
        ds,
        batch_size=cfg.train.batch_size,
        sampler=order.tolist(),
        num_workers=cfg.train.workers,
        worker_init_fn=seed_worker,
        collate_fn=collate_slices,
        generator=gen,
        pin_memory=False,
        persistent_workers=False,
    )


@torch.no_grad()
def predict(
    model: torch.nn.Module, loader: DataLoader, device: torch.device, amp: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probabilities (N, 6), labels (N, 6) and cache indices (N,) over ``loader``."""
    model.eval()
    probs, ys, idx = [], [], []
    for x, y, index in loader:
        with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
            logits = model(prepare_batch(x, device))  # (B, 6)
        probs.append(torch.sigmoid(logits.float()).cpu().numpy())
        ys.append(y.numpy())
        idx.append(np.asarray(index))
    if not probs:
        return np.zeros((0, len(LABELS))), np.zeros((0, len(LABELS))), np.zeros(0, dtype=np.int64)
    return np.concatenate(probs), np.concatenate(ys), np.concatenate(idx)


def validate(
    model: torch.nn.Module, ds: SliceDataset, cfg: RunConfig, device: torch.device, info: DistInfo
) -> dict[str, Any]:
    """Weighted log loss on the held-out fold; each rank predicts a share, rank 0 scores all."""
    order = shard(np.arange(len(ds)), info, pad=False)
    loader = make_loader(ds, order, cfg, epoch=0)
    parts = gather_objects(predict(model, loader, device, cfg.train.amp), info)
    p = np.concatenate([q[0] for q in parts])
    y = np.concatenate([q[1] for q in parts])
    per = per_label_log_loss(y, p)
    per_label = {f"ll_{k}": float(v) for k, v in zip(LABELS, per, strict=True)}
    return {"wll": weighted_log_loss(y, p), **per_label}


def _train_epoch(
    model: torch.nn.Module,
    loader: DataLoader,
    opt: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    state: dict[str, Any],
    ctx: dict[str, Any],
) -> float:
    """One pass over ``loader``; updates ``state["step"]``; returns the mean training loss."""
    cfg: RunConfig = ctx["cfg"]
    device: torch.device = ctx["device"]
    use_amp = cfg.train.amp and device.type == "cuda"
    model.train()
    total, count = 0.0, 0
    bar = tqdm(
        loader,
        desc=f"slice epoch {state['epoch'] + 1}/{cfg.train.epochs}",
        leave=False,
        disable=None if ctx["info"].is_main else True,
    )
    for x, y, _ in bar:
        lr = lr_at(
            state["step"],
            ctx["total_steps"],
            cfg.optim.lr,
            cfg.optim.schedule,
            cfg.optim.warmup_frac,
            cfg.optim.min_lr_frac,
        )
        for group in opt.param_groups:
            group["lr"] = lr
        x = prepare_batch(x, device, ctx["augment"])  # (B,C,H,W) float, augmented on device
        y = y.to(device, non_blocking=True)  # (B, 6)
        with torch.autocast(device.type, enabled=use_amp):
            loss = weighted_bce(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.optim.grad_clip:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        scaler.step(opt)
        scaler.update()
        state["step"] += 1
        total, count = total + float(loss.item()) * len(x), count + len(x)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if state["step"] % max(1, cfg.train.log_every) == 0:
            ctx["log"].write(
                {
                    "stage": "slice",
                    "epoch": state["epoch"] + 1,
                    "step": state["step"],
                    "split": "train",
                    "loss": float(loss.item()),
                    "lr": lr,
                }
            )
    return total / max(count, 1)


def _core(model: torch.nn.Module) -> SliceModel:
    """The SliceModel inside a possible DDP wrapper."""
    core = model.module if isinstance(model, DistributedDataParallel) else model
    assert isinstance(core, SliceModel)
    return core


def _payload(
    model: torch.nn.Module, state: dict[str, Any], ctx: dict[str, Any], with_training_state: bool
) -> dict[str, Any]:
    core = _core(model)
    payload: dict[str, Any] = {
        "kind": "slice",
        "model": {k: v.detach().cpu() for k, v in core.state_dict().items()},
        "model_args": core.model_args(),
        **ctx["describe"],
        "epoch": state["epoch"],
        "step": state["step"],
        "best_metric": state["best"],
    }
    if with_training_state:
        payload.update(
            optimizer=ctx["opt"].state_dict(),
            scheduler={
                "kind": ctx["cfg"].optim.schedule,
                "step": state["step"],
                "total_steps": ctx["total_steps"],
            },
            scaler=ctx["scaler"].state_dict(),
            rng=rng_state(),
            bad_epochs=state["bad_epochs"],
        )
    return payload


def _resume(
    path: Path,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    state: dict[str, Any],
) -> None:
    ckpt = load_checkpoint(path)
    for key in ("optimizer", "scaler", "rng"):
        if key not in ckpt:
            raise CheckpointError(f"{path}: no training state ({key}); cannot resume from it")
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    scaler.load_state_dict(ckpt["scaler"])
    set_rng_state(ckpt["rng"])
    state.update(
        epoch=ckpt["epoch"],
        step=ckpt["step"],
        best=ckpt["best_metric"],
        bad_epochs=ckpt.get("bad_epochs", 0),
    )


def _end_epoch(
    model: torch.nn.Module,
    state: dict[str, Any],
    ctx: dict[str, Any],
    loss: float,
    val: dict[str, Any] | None,
    seconds: float,
    paths: tuple[Path, Path],
) -> bool:
    """Book-keeping after an epoch: best/patience, log, checkpoints, one line; True = stop."""
    cfg, info = ctx["cfg"], ctx["info"]
    improved = val is None or state["best"] is None or val["wll"] < state["best"]
    if val is not None and improved:
        state["best"], state["bad_epochs"] = val["wll"], 0
    elif val is not None:
        state["bad_epochs"] += 1
    if info.is_main:
        rec = {"stage": "slice", "epoch": state["epoch"], "step": state["step"]}
        ctx["log"].write({**rec, "split": "train", "loss": loss})
        if val is not None:
            ctx["log"].write({**rec, "split": "val", "loss": val["wll"], **val})
        if improved:
            save_checkpoint(paths[0], _payload(model, state, ctx, with_training_state=False))
        save_checkpoint(paths[1], _payload(model, state, ctx, with_training_state=True))
        vtxt = f"  val wll {val['wll']:.4f}" if val else ""
        mark = "  *best" if improved and val else ""
        print(
            f"slice epoch {state['epoch']}/{cfg.train.epochs}  train loss {loss:.4f}{vtxt}"
            f"  ({seconds:.0f} s){mark}",
            flush=True,
        )
    patience = cfg.train.early_stopping_patience
    stop = bool(patience is not None and val is not None and state["bad_epochs"] >= patience)
    stop = bool(broadcast_object(stop, info))
    if stop and info.is_main:
        print(f"early stopping: no improvement for {patience} epochs", flush=True)
    return stop


def train_slice_model(
    cfg: RunConfig,
    cache: SliceCache,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    run_dir: Path,
    device: torch.device,
    info: DistInfo,
    resume: bool = False,
    stop_after: int | None = None,
) -> SliceResult:
    """Train the slice CNN on ``train_idx`` (cache indices), validate on ``val_idx``.

    Writes ``run_dir/checkpoints/slice_last.pt`` and ``slice_best.pt`` and appends to
    ``run_dir/metrics.jsonl`` (rank 0 only). With ``resume`` it continues from
    ``slice_last.pt`` exactly where it stopped (epoch granularity). ``stop_after`` ends this
    call after that many epochs without changing the schedule (time-boxed jobs, resume tests).
    """
    ckpt_dir = Path(run_dir) / "checkpoints"
    last, best = ckpt_dir / "slice_last.pt", ckpt_dir / "slice_best.pt"
    chans = channel_spec(cfg)
    # uint8 windows: 4x less through the loaders' shared memory and to the device (see
    # SliceDataset); prepare_batch turns them into float32 in [0, 1] on the device.
    train_ds = SliceDataset(cache, train_idx, chans, cfg.data.input_size, cfg.augment, "uint8")
    val_ds = SliceDataset(cache, val_idx, chans, cfg.data.input_size, None, "uint8")
    model: torch.nn.Module = build_slice_model(**model_args(cfg)).to(device)
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay
    )
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.train.amp and device.type == "cuda")
    state: dict[str, Any] = {"epoch": 0, "step": 0, "best": None, "bad_epochs": 0}
    if resume:
        _resume(last, model, opt, scaler, state)
    if info.enabled:
        model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    weights = sample_weights(cache.labels[train_idx], cfg)
    per_rank = len(train_idx) // info.world_size
    steps = max(1, per_rank // cfg.train.batch_size)  # full batches only (BatchNorm)
    if cfg.train.max_steps_per_epoch:
        steps = min(steps, cfg.train.max_steps_per_epoch)
    ctx: dict[str, Any] = {
        "cfg": cfg,
        "device": device,
        "info": info,
        "total_steps": steps * cfg.train.epochs,
        "log": MetricsLog(run_dir, enabled=info.is_main),
        "opt": opt,
        "scaler": scaler,
        "describe": describe(cfg, cache),
    }
    end = (
        cfg.train.epochs
        if stop_after is None
        else min(cfg.train.epochs, state["epoch"] + stop_after)
    )
    while state["epoch"] < end:
        t0 = time.time()
        order = shard(
            epoch_order(len(train_ds), state["epoch"], cfg.train.seed, weights), info, pad=True
        )
        order = order[: steps * cfg.train.batch_size]
        # A fresh, seeded batch augmenter per epoch (and rank): resume needs no generator state.
        ctx["augment"] = make_batch_augment(
            cfg.augment, seed=(cfg.train.seed * 1000 + state["epoch"]) * 100 + info.rank,
            windows=[(w.center, w.width) for _ in chans.offsets for w in chans.resolved()],
        )
        loss = reduce_mean(
            _train_epoch(
                model, make_loader(train_ds, order, cfg, state["epoch"]), opt, scaler, state, ctx
            ),
            info,
        )
        val = validate(model, val_ds, cfg, device, info) if len(val_ds) else None
        state["epoch"] += 1
        if _end_epoch(model, state, ctx, loss, val, time.time() - t0, (best, last)):
            break
    ctx["log"].close()
    core = _core(model)
    return SliceResult(best, last, state["best"], state["epoch"], core)
