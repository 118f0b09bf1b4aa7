"""Stage 1: the slice CNN training loop, a plain loop readable top to bottom.

One epoch = a seeded permutation (or weighted draw, when oversampling) of the training slices,
sharded over DDP ranks; AdamW with the learning rate set at every step from
:mod:`ich.train.schedule`; AMP and a GradScaler on CUDA only; gradient clipping; validation on the
held-out fold with the RSNA weighted log loss; ``slice_last`` every epoch (model file + training
state, exact resume) and ``slice_best`` when validation improves; early stopping on patience.

Read :func:`train_slice_model` top to bottom: data, model and optimizer, then the epoch loop
(:func:`train_epoch`, :func:`validate`, :func:`ich.train.epoch.end_epoch`, shared with stage 2).
The optimizer, the schedule and the loss are each one small function (:func:`make_optimizer`,
:func:`schedule_lr`, :func:`loss_fn`), so that each can be swapped alone. The loss is read back
from the device once per log interval, never per step.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ich.config import RunConfig
from ich.data.augment import make_batch_augment, prepare_batch
from ich.data.cache import SliceCache
from ich.data.datasets import SliceDataset, oversample_weights
from ich.data.loader import epoch_loader
from ich.errors import CheckpointError
from ich.eval.metrics import per_label_log_loss, weighted_log_loss
from ich.eval.recipe import recipe_rows
from ich.labels import LABELS, label_weights
from ich.models.slice_cnn import SliceModel, build_slice_model
from ich.models.spec import ModelSpec
from ich.runs.checkpoint import MODEL_SUFFIX, load_model_file, save_model
from ich.train.checkpoint import (
    STATE_SUFFIX,
    ResumePoint,
    load_train_state,
    rng_state,
    save_train_state,
    set_rng_state,
)
from ich.train.common import MetricsLog, weighted_bce
from ich.train.describe import channel_spec, slice_spec
from ich.train.distributed import DistInfo, gather_objects, reduce_mean
from ich.train.ema import ModelEma
from ich.train.epoch import EpochEnd, end_epoch
from ich.train.losses import build_loss
from ich.train.optim import build_optimizer, build_scheduler, set_backbone_trainable
from ich.train.schedule import lr_at
from ich.train.state import EvalResult, TrainState


@dataclass
class SliceStage:
    """What the slice stage's functions share: configuration, device, optimizer, log.

    ``augment`` is replaced every epoch (a fresh, seeded batch augmenter).
    """

    cfg: RunConfig
    device: torch.device
    info: DistInfo
    total_steps: int
    log: MetricsLog
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    spec: ModelSpec
    augment: Any = None
    sched: Any = None  # ich.train.optim.Scheduler
    ema: ModelEma | None = None
    loss: Any = None  # ich.train.losses.LossFn


@dataclass
class SliceResult:
    """What stage 1 leaves behind."""

    best_path: Path
    last_path: Path
    best_wll: float | None
    epochs_run: int
    model: torch.nn.Module


def model_args(cfg: RunConfig, num_labels: int = len(LABELS)) -> dict[str, Any]:
    """Keyword arguments that build the slice CNN of a run with ``num_labels`` outputs."""
    n_chans = len(cfg.data.windows) * len(cfg.data.offsets)
    return {
        "backbone": cfg.model.backbone,
        "in_chans": n_chans,
        "pretrained": cfg.model.pretrained,
        "weights": cfg.model.weights,
        "drop_rate": cfg.model.drop_rate,
        "num_labels": num_labels,
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


@torch.no_grad()
def predict(
    model: torch.nn.Module, loader: DataLoader, device: torch.device, amp: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probabilities (N, K), labels (N, K) and cache indices (N,) over ``loader``."""
    model.eval()
    probs, ys, idx = [], [], []
    for x, y, index in loader:
        with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
            logits = model(prepare_batch(x, device))  # (B, K)
        probs.append(torch.sigmoid(logits.float()).cpu().numpy())
        ys.append(y.numpy())
        idx.append(np.asarray(index))
    if not probs:
        k = loader.dataset.cache.labels.shape[1]  # type: ignore[attr-defined]
        return np.zeros((0, k)), np.zeros((0, k)), np.zeros(0, dtype=np.int64)
    return np.concatenate(probs), np.concatenate(ys), np.concatenate(idx)


def validate(
    model: torch.nn.Module, loader: DataLoader, cfg: RunConfig, device: torch.device,
    info: DistInfo, labels: Sequence[str] = LABELS,
) -> EvalResult:
    """Weighted log loss (over the run's ``labels``) on the held-out fold; each rank predicts a
    share, rank 0 scores all."""
    parts = gather_objects(predict(model, loader, device, cfg.train.amp), info)
    p = np.concatenate([q[0] for q in parts])
    y = np.concatenate([q[1] for q in parts])
    per = tuple(float(v) for v in per_label_log_loss(y, p, labels=labels))
    return EvalResult(weighted_log_loss(y, p, labels=labels), per, tuple(labels))


def make_optimizer(model: torch.nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    """The stage-1 optimizer (``optim.name``, see :func:`ich.train.optim.build_optimizer`)."""
    return build_optimizer(model, cfg.optim)


def schedule_lr(step: int, total_steps: int, cfg: RunConfig) -> float:
    """The stage-1 learning rate at optimizer step ``step``."""
    o = cfg.optim
    return lr_at(step, total_steps, o.lr, o.schedule, o.warmup_frac, o.min_lr_frac)


def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The default stage-1 loss: the RSNA metric's weighted BCE (the run's is ``stage.loss``)."""
    return weighted_bce(logits, targets)


def train_epoch(
    model: torch.nn.Module, loader: DataLoader, stage: SliceStage, state: TrainState
) -> float:
    """One pass over ``loader``; advances ``state.step``; returns the mean training loss.

    The loss is summed on the device and read back (one ``.item()`` sync) once per log
    interval and at the end, so the GPU is never stalled per step.
    """
    cfg, device = stage.cfg, stage.device
    use_amp = cfg.train.amp and device.type == "cuda"
    every = max(1, cfg.train.log_every)
    model.train()
    set_backbone_trainable(_core(model), state.epoch >= cfg.train.freeze_epochs)
    total = torch.zeros((), dtype=torch.float64, device=device)
    window = torch.zeros((), dtype=torch.float64, device=device)
    count, in_window = 0, 0
    bar = tqdm(
        loader,
        desc=f"slice epoch {state.epoch + 1}/{cfg.train.epochs}",
        leave=False,
        disable=None if stage.info.is_main else True,
    )
    accum, lr = cfg.train.accumulate, 0.0
    for i, (x, y, _) in enumerate(bar):
        if i % accum == 0:  # the first of `accum` micro-batches of one optimizer step
            lr = stage.sched.apply(stage.opt, state.step)
            stage.opt.zero_grad(set_to_none=True)
        last = (i + 1) % accum == 0
        x = prepare_batch(x, device, stage.augment)  # (B,C,H,W) float, augmented on device
        y = y.to(device, non_blocking=True)  # (B, 6)
        # DDP all-reduces gradients on the last micro-batch only.
        sync = model.no_sync() if isinstance(model, DistributedDataParallel) and not last else None
        with sync or contextlib.nullcontext():
            with torch.autocast(device.type, enabled=use_amp):
                loss = stage.loss(model(x).float(), y)
            stage.scaler.scale(loss / accum).backward()
        batch_loss = loss.detach().double()
        total += batch_loss * len(x)
        count += len(x)
        if not last:
            continue
        if cfg.optim.grad_clip:
            stage.scaler.unscale_(stage.opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        stage.scaler.step(stage.opt)
        stage.scaler.update()
        if stage.ema is not None:
            stage.ema.update(_core(model))
        state.step += 1
        window += batch_loss
        in_window += 1
        if state.step % every == 0:
            mean = float(window.item()) / in_window  # the one sync of this log interval
            window.zero_()
            in_window = 0
            bar.set_postfix(loss=f"{mean:.4f}")
            stage.log.write(
                {"stage": "slice", "epoch": state.epoch + 1, "step": state.step,
                 "split": "train", "loss": mean, "lr": lr}
            )
    return float(total.item()) / max(count, 1)


def _core(model: torch.nn.Module) -> SliceModel:
    """The SliceModel inside a possible DDP wrapper."""
    core = model.module if isinstance(model, DistributedDataParallel) else model
    assert isinstance(core, SliceModel)
    return core


def _raw_path(path: Path) -> Path:
    """``slice_last.raw.safetensors``: the non-averaged weights beside an EMA ``slice_last``."""
    return path.with_name(path.name.replace(MODEL_SUFFIX, ".raw" + MODEL_SUFFIX))


def save_slice(model: torch.nn.Module, stage: SliceStage, path: Path) -> Path:
    """The slice CNN's model file (weights + spec), what inference loads; with
    ``train.ema_decay`` the averaged weights."""
    weights = stage.ema.state_dict() if stage.ema is not None else _core(model).state_dict()
    return save_model(path, weights, stage.spec)


def save_resume_point(model: torch.nn.Module, stage: SliceStage, state: TrainState, path: Path
                      ) -> None:
    """``slice_last`` weights and, beside them, the training state for ``--resume``."""
    save_slice(model, stage, path)
    if stage.ema is not None:  # the raw weights the optimizer continues from
        save_model(_raw_path(path), _core(model).state_dict(), stage.spec)
    save_train_state(
        path.with_suffix(STATE_SUFFIX),
        ResumePoint(
            state=TrainState(state.epoch, state.step, state.best, state.bad_epochs),
            optimizer=stage.opt.state_dict(),
            scaler=stage.scaler.state_dict(),
            scheduler={**stage.sched.state_dict(), "step": state.step},
            rng=rng_state(),
        ),
    )


def resume_from(path: Path, model: torch.nn.Module, stage: SliceStage) -> TrainState:
    """Restore weights, optimizer, scaler and RNG from ``slice_last``; the state to go on from."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no slice_last checkpoint in this run; cannot resume")
    point = load_train_state(path.with_suffix(STATE_SUFFIX))
    weights, _ = load_model_file(path)
    if stage.ema is not None:
        stage.ema.load_state_dict(weights)
        weights, _ = load_model_file(_raw_path(path))
    model.load_state_dict(weights)
    stage.opt.load_state_dict(point.optimizer)
    stage.sched.load_state_dict(point.scheduler)
    stage.scaler.load_state_dict(point.scaler)
    set_rng_state(point.rng)
    return point.state


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

    Writes ``run_dir/checkpoints/slice_best.safetensors`` and ``slice_last.safetensors`` (+
    ``slice_last.state.pt``) and appends to ``run_dir/metrics.jsonl`` (rank 0 only). With
    ``resume`` it continues from ``slice_last`` exactly where it stopped (epoch granularity).
    ``stop_after`` ends this call after that many epochs without changing the schedule
    (time-boxed jobs, resume tests).
    """
    ckpt_dir = Path(run_dir) / "checkpoints"
    last, best = ckpt_dir / f"slice_last{MODEL_SUFFIX}", ckpt_dir / f"slice_best{MODEL_SUFFIX}"

    # -- data: windows x neighbours of the cached HU, augmented in training ---------------------
    chans = channel_spec(cfg)
    # uint8 windows: 4x less through the loaders' shared memory and to the device (see
    # SliceDataset); prepare_batch turns them into float32 in [0, 1] on the device.
    size, seed = cfg.data.input_size, cfg.train.seed
    train_ds = SliceDataset(cache, train_idx, chans, size, cfg.augment, "uint8", seed=seed)
    val_ds = SliceDataset(cache, val_idx, chans, size, None, "uint8")
    # -- model, optimizer, AMP scaler, its ModelSpec; then resume or start fresh ----------------
    core = build_slice_model(**model_args(cfg, len(cache.label_names)))
    model: torch.nn.Module = core.to(device)
    per_rank = len(train_idx) // info.world_size
    batch = cfg.train.batch_size * cfg.train.accumulate  # samples per optimizer step and rank
    steps = max(1, per_rank // batch)  # full batches only (BatchNorm)
    if cfg.train.max_steps_per_epoch:
        steps = min(steps, cfg.train.max_steps_per_epoch)
    spec = slice_spec(cfg, cache, core)
    stage = SliceStage(
        cfg=cfg,
        device=device,
        info=info,
        total_steps=steps * cfg.train.epochs,
        log=MetricsLog(run_dir, enabled=info.is_main),
        opt=make_optimizer(model, cfg),
        scaler=torch.amp.GradScaler(device.type, enabled=cfg.train.amp and device.type == "cuda"),
        spec=spec,
        sched=build_scheduler(cfg.optim, steps * cfg.train.epochs, steps),
        loss=build_loss(cfg.loss, label_weights(spec.labels)),  # any x2 only when present
        ema=ModelEma(model, cfg.train.ema_decay) if cfg.train.ema_decay else None,
    )
    if info.is_main:
        print("; ".join(f"{k.lower()}: {v}" for k, v in recipe_rows(cfg)), flush=True)
    state = resume_from(last, model, stage) if resume else TrainState()
    if info.enabled:
        model = DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            # A frozen backbone produces no gradients for DDP to wait for.
            find_unused_parameters=cfg.train.freeze_epochs > 0,
        )
    how = EpochEnd(
        stage="slice",
        epochs=cfg.train.epochs,
        patience=cfg.train.early_stopping_patience,
        save_best=lambda: save_slice(model, stage, best),
        save_last=lambda: save_resume_point(model, stage, state, last),
    )
    # -- one persistent loader per split; the sampler carries the epoch ------------------------
    weights = sample_weights(cache.labels[train_idx], cfg)

    def train_order(epoch: int) -> np.ndarray:
        order = shard(epoch_order(len(train_ds), epoch, seed, weights), info, pad=True)
        return order[: steps * batch]

    bs, workers = cfg.train.batch_size, cfg.train.workers
    train_loader, train_sampler = epoch_loader(train_ds, train_order, bs, workers, seed)
    val_order = shard(np.arange(len(val_ds)), info, pad=False)
    val_loader, _ = epoch_loader(val_ds, lambda _: val_order, bs, workers, seed)
    # -- the loop -------------------------------------------------------------------------------
    end = cfg.train.epochs
    if stop_after is not None:
        end = min(end, state.epoch + stop_after)
    while state.epoch < end:
        t0 = time.time()
        train_sampler.set_epoch(state.epoch)
        # A fresh, seeded batch augmenter per epoch (and rank): resume needs no generator state.
        stage.augment = make_batch_augment(
            cfg.augment, seed=(seed * 1000 + state.epoch) * 100 + info.rank,
            windows=[(w.center, w.width) for _ in chans.offsets for w in chans.resolved()],
        )
        loss = reduce_mean(train_epoch(model, train_loader, stage, state), info)
        scored = stage.ema.module if stage.ema is not None else model
        val = (validate(scored, val_loader, cfg, device, info, spec.labels) if len(val_ds)
               else None)
        stage.sched.epoch_end(val.wll if val is not None else None)
        state.epoch += 1
        if end_epoch(how, state, stage.log, info, loss, val, time.time() - t0):
            break
    stage.log.close()
    return SliceResult(best, last, state.best, state.epoch, _core(model))
