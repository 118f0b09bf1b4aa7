"""Slice embeddings (and slice-model logits) for every slice, the study model's input.

Stage 2 learns from per-slice embeddings of the stage-1 CNN. Ideally they are *out of fold*:
each slice embedded by a CNN that never trained on it, which needs k slice models (one per
fold). ``ich train`` trains one slice model (validation fold ``data.fold``) and embeds every
slice with it: validation-fold embeddings are truly out of fold, training-fold embeddings are
in-fold (more confident than at test time). This is the cheap recipe used for the demo; the
sequence model's validation score is still honest because it is measured on the held-out fold.
``ich train --all-folds`` (:mod:`ich.train.foldset`) trains the k slice models and gives the
sequence models out-of-fold embeddings of every slice.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ich.atomic import atomic_path
from ich.data.augment import prepare_batch
from ich.data.cache import SliceCache
from ich.data.datasets import ChannelSpec, SliceDataset, collate_slices
from ich.data.loader import loader_workers
from ich.models.slice_cnn import SliceModel
from ich.runs.embed import embed_batch


def extract_embeddings(
    model: SliceModel,
    cache: SliceCache,
    channels: ChannelSpec,
    input_size: int,
    device: torch.device,
    batch_size: int = 64,
    workers: int = 0,
    tta_flip: bool = True,
    indices: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Embed slices of ``cache``: returns embeddings (N, D) float32 and logits (N, 6).

    Rows follow ``indices`` (cache indices; default every slice, 0..N-1).
    """
    model = model.to(device).eval()
    rows = np.arange(len(cache.catalog)) if indices is None else np.asarray(indices)
    ds = SliceDataset(cache, rows, channels, input_size, None, "uint8")
    loader = DataLoader(
        ds, batch_size=batch_size, shuffle=False, num_workers=loader_workers(workers),
        collate_fn=collate_slices,
    )
    embs, logits = [], []
    for x, _, _ in tqdm(loader, desc="embeddings", leave=False, disable=None):
        e, lg = embed_batch(model, prepare_batch(x, device), tta_flip)
        embs.append(e.float().cpu().numpy())
        logits.append(lg.float().cpu().numpy())
    return np.concatenate(embs).astype(np.float32), np.concatenate(logits).astype(np.float32)


def save_embeddings(
    path: Path,
    image_ids: np.ndarray,
    folds: np.ndarray,
    embeddings: np.ndarray,
    logits: np.ndarray,
    source: str = "",
) -> Path:
    """Write ``image_id``, ``fold``, ``embeddings`` (N, D), ``logits`` (N, 6) and what made
    them (``source``, see :func:`embedding_source`) to an .npz atomically."""
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(
            tmp,
            image_id=np.asarray(image_ids, dtype=str),
            fold=np.asarray(folds),
            embeddings=embeddings,
            logits=logits,
            source=np.asarray(source),
        )
    return path


def embedding_source(checkpoint: Path, cache: SliceCache, channels: ChannelSpec, input_size: int,
                     tta_flip: bool) -> str:
    """A digest of everything embeddings depend on: the checkpoint's bytes, the cache's
    description, the channels, the input size and the flip TTA."""
    digest = hashlib.sha256()
    with open(checkpoint, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    digest.update(json.dumps(cache.info, sort_keys=True, default=str).encode())
    digest.update(f"{channels!r}|{input_size}|{tta_flip}".encode())
    return digest.hexdigest()


def reusable_embeddings(path: Path, source: str, image_ids: np.ndarray
                        ) -> dict[str, np.ndarray] | None:
    """What :func:`save_embeddings` wrote at ``path`` when ``source`` made it for exactly these
    slices, else None: stage 2 alone then retrains in seconds instead of re-embedding."""
    if not path.is_file():
        return None
    try:
        saved = load_embeddings(path)
    except (OSError, ValueError, KeyError):  # an unreadable file is re-made, not trusted
        return None
    same = (str(saved.get("source", "")) == source
            and np.array_equal(saved["image_id"], np.asarray(image_ids, dtype=str)))
    return saved if same else None


def load_embeddings(path: Path) -> dict[str, np.ndarray]:
    """Read what :func:`save_embeddings` wrote."""
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}
