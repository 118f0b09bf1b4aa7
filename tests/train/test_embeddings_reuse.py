"""Stage 2 alone reads the saved slice embeddings only when they are exactly what it would make."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

from ich.data.datasets import ChannelSpec
from ich.train.embeddings import embedding_source, reusable_embeddings, save_embeddings


def _source(checkpoint: Path, info: dict[str, object], size: int = 64, tta: bool = True) -> str:
    cache = SimpleNamespace(info=info)
    return embedding_source(checkpoint, cache, ChannelSpec(), size, tta)  # type: ignore[arg-type]


def test_saved_embeddings_are_reused_only_from_the_same_checkpoint_and_slices(
    tmp_path: Path,
) -> None:
    ckpt = tmp_path / "slice_best.safetensors"
    ckpt.write_bytes(b"weights-1")
    info = {"spec_key": "abc", "counts": {"ok": 3}}
    source = _source(ckpt, info)
    ids = np.array(["ID_a", "ID_b", "ID_c"])
    emb, logits = np.arange(12, dtype=np.float32).reshape(3, 4), np.ones((3, 6), np.float32)
    path = save_embeddings(tmp_path / "oof" / "e.npz", ids, np.zeros(3), emb, logits, source)

    got = reusable_embeddings(path, source, ids)
    assert got is not None and np.array_equal(got["embeddings"], emb)
    assert np.array_equal(got["logits"], logits) and np.array_equal(got["fold"], np.zeros(3))
    # Anything the embeddings depend on changes the digest, and then nothing is reused.
    assert reusable_embeddings(path, source, ids[::-1]) is None
    assert reusable_embeddings(path, _source(ckpt, info, size=128), ids) is None
    assert reusable_embeddings(path, _source(ckpt, info, tta=False), ids) is None
    assert reusable_embeddings(path, _source(ckpt, {**info, "spec_key": "abd"}), ids) is None
    ckpt.write_bytes(b"weights-2")  # the slice model was retrained
    assert reusable_embeddings(path, _source(ckpt, info), ids) is None
    # Files without a source (older runs) or unreadable ones are never trusted.
    old = save_embeddings(tmp_path / "old.npz", ids, np.zeros(3), emb, logits)
    assert reusable_embeddings(old, source, ids) is None
    path.write_bytes(b"not an npz")
    assert reusable_embeddings(path, source, ids) is None
    assert reusable_embeddings(tmp_path / "missing.npz", source, ids) is None
