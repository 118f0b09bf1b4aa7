"""K-fold training (``ich train --all-folds``): one run per fold, study models on out-of-fold
embeddings.

Why: the winning RSNA recipe trains the study-level model on slice embeddings that no slice
model saw in training. A single run embeds its own training slices (in fold: more confident
than on new data, see :mod:`ich.train.embeddings`). Here each of the k slice models embeds
only its validation fold, so every slice gets an out-of-fold embedding, and each fold's
sequence model learns from those. At test time each fold run applies its own slice model and
sequence model, and the k runs are averaged (as any ensemble of runs).

Layout of a fold set ``OUT``::

    OUT/foldset.json               format, k, the fold runs
    OUT/config.yaml, OUT/folds.csv the shared configuration and folds
    OUT/fold<k>/                   a complete run with data.fold=k (usable on its own)
    OUT/oof/slice_embeddings.npz   every slice, embedded by the slice model of its fold
    OUT/oof_predictions.parquet    the fold runs' validation predictions: every labelled slice
    OUT/train_prevalence.json      the fold runs' training prevalences, averaged

``ich predict OUT``, ``ich serve --model OUT`` and ``Predictor.from_run(OUT)`` use the k runs;
``ich evaluate OUT`` scores every labelled slice out of fold.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ich.atomic import atomic_write_text
from ich.config import RunConfig, save_config
from ich.data.cache import SliceCache
from ich.data.tables import write_frame
from ich.errors import ConfigError
from ich.eval.metrics import weighted_log_loss
from ich.runs.checkpoint import MODEL_SUFFIX
from ich.runs.foldset import FOLDSET_FILE, FOLDSET_FORMAT
from ich.train.common import resolve_device, seed_everything
from ich.train.distributed import env_world_size
from ich.train.embeddings import save_embeddings
from ich.train.runner import load_or_make_folds, run_training
from ich.train.sequence_stage import embed_with_run, run_stage2
from ich.train.state import TrainSummary


def run_fold_set(
    cfg: RunConfig, cache_dir: Path, out: Path, resume: bool = False
) -> TrainSummary:
    """Train the k fold runs, then their sequence models on out-of-fold embeddings.

    Args:
        cfg: The configuration; ``data.fold`` is set to each fold in turn.
        cache_dir: The preprocessing cache.
        out: The fold set folder to create (or continue with ``resume``).
        resume: Continue each fold run from its last slice checkpoint where there is one.

    Returns:
        A summary: the fold runs' validation scores and the out-of-fold scores of all slices.
    """
    if env_world_size() > 1:
        raise ConfigError("--all-folds runs in one process: launch it without torchrun")
    k = cfg.data.folds
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = [f"fold{i}" for i in range(k)]
    atomic_write_text(out / FOLDSET_FILE, json.dumps(
        {"format": FOLDSET_FORMAT, "folds": k, "runs": runs}, indent=2))
    save_config(cfg, out)
    configs = [_with_fold(cfg, i) for i in range(k)]
    scores: dict[str, float | None] = {}
    for i, (name, cfg_i) in enumerate(zip(runs, configs, strict=True)):
        print(f"== fold {i + 1}/{k}: slice model ({out / name}) ==", flush=True)
        again = resume and (out / name / "checkpoints" / f"slice_last{MODEL_SUFFIX}").is_file()
        res = run_training(cfg_i, cache_dir, out / name, stages=("slice",), resume=again)
        scores[f"fold{i}_slice_wll"] = res.scores.get("slice_wll")

    print("== out-of-fold embeddings: each fold's slices by the slice model that did not "
          "train on them ==", flush=True)
    cache = SliceCache(cache_dir)
    folds = load_or_make_folds(cfg, cache, out, write=True)
    device = resolve_device(cfg.train.device)
    emb: np.ndarray | None = None
    logits = np.zeros((len(cache), len(cache.label_names)), dtype=np.float32)
    for i, (name, cfg_i) in enumerate(zip(runs, configs, strict=True)):
        rows = np.flatnonzero(folds == i)
        if len(rows) == 0:
            continue
        e, lg = embed_with_run(cfg_i, cache, out / name, device, rows)
        if emb is None:
            emb = np.zeros((len(cache), e.shape[1]), dtype=np.float32)
        emb[rows], logits[rows] = e, lg
    if emb is None:
        raise ConfigError("no slice belongs to any fold: nothing to embed")
    save_embeddings(out / "oof" / "slice_embeddings.npz", cache.catalog["image_id"].to_numpy(),
                    folds, emb, logits)

    frames = []
    for i, (name, cfg_i) in enumerate(zip(runs, configs, strict=True)):
        print(f"== fold {i + 1}/{k}: sequence model on out-of-fold embeddings ==", flush=True)
        seed_everything(cfg_i.train.seed, cfg_i.train.deterministic)
        stage2 = run_stage2(cfg_i, cache, folds, out / name, device, features=(emb, logits))
        wll = stage2.get("sequence_wll")
        scores[f"fold{i}_sequence_wll"] = None if wll is None else float(wll)  # type: ignore[arg-type]
        if stage2.get("oof_predictions"):
            frames.append(pd.read_parquet(str(stage2["oof_predictions"])))
    oof_path = None
    if frames:
        oof = pd.concat(frames, ignore_index=True)
        oof_path = write_frame(oof, out / "oof_predictions.parquet")
        scores.update(_oof_scores(oof, cache.label_names))
    _average_prevalence([out / r for r in runs], out / "train_prevalence.json",
                        cache.label_names)
    return TrainSummary(run_dir=out, oof_predictions=oof_path,
                        fold_runs=tuple(out / r for r in runs), scores=scores)


def _with_fold(cfg: RunConfig, fold: int) -> RunConfig:
    """A copy of ``cfg`` validating on ``fold``."""
    out = copy.deepcopy(cfg)
    out.data.fold = fold
    return out


def _oof_scores(oof: pd.DataFrame, labels: Sequence[str]) -> dict[str, float]:
    """Weighted log loss of both models over every out-of-fold slice."""
    y = oof[list(labels)].to_numpy(dtype=np.float64)
    scores = {}
    for key, prefix in (("oof_slice_wll", "p_"), ("oof_sequence_wll", "q_")):
        cols = [f"{prefix}{name}" for name in labels]
        if all(c in oof.columns for c in cols) and oof[cols].notna().all(axis=None):
            scores[key] = weighted_log_loss(y, oof[cols].to_numpy(dtype=np.float64),
                                            labels=labels)
    return scores


def _average_prevalence(run_dirs: list[Path], path: Path, labels: Sequence[str]) -> None:
    """The base-rate baseline of the fold set: the fold runs' training prevalences, averaged.

    Each slice is in the training rows of k - 1 folds, so the average is about the prevalence
    of the whole labelled set: fitted partly on the rows it is scored on, it is if anything a
    slightly harder baseline to beat than each fold's own.
    """
    found = [json.loads((d / "train_prevalence.json").read_text())
             for d in run_dirs if (d / "train_prevalence.json").is_file()]
    if not found:
        return
    data = {level: {name: float(np.mean([f[level][name] for f in found])) for name in labels}
            for level in ("slice", "study")}
    atomic_write_text(path, json.dumps(data, indent=2))
