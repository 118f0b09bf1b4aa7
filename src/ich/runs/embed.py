"""Embedding a batch of slices and building the sequence model's per-slice input.

Shared by training (stage-2 inputs) and inference (the Predictor): both must build the study
model's features with exactly these functions.
"""

from __future__ import annotations

import numpy as np
import torch

from ich.models.slice_cnn import SliceModel

#: How the sequence model's per-slice input can be made from the slice model's outputs:
#: ``embedding+logits`` (the RSNA recipe) or ``logits`` alone (``sequence.features``).
FEATURE_RECIPES = ("embedding+logits", "logits")
#: The default recipe, and the one of model files written before there was a choice.
FEATURES = FEATURE_RECIPES[0]


def sequence_features(embeddings: np.ndarray, logits: np.ndarray, recipe: str = FEATURES
                      ) -> np.ndarray:
    """Per-slice input of the sequence model from (T, D) embeddings and (T, L) logits.

    ``embedding+logits`` gives (T, D + L): the logits give the sequence model the CNN's own
    opinion directly, so it only has to learn a correction from the neighbours. ``logits``
    gives (T, L): a model that sees only the CNN's opinions cannot extrapolate from embeddings
    of scans unlike its training data, which is what a CNN trained on a phantom meets on real
    scans. Inference must build features with this same function and the model's recipe.

    Raises:
        ValueError: an unknown recipe.
    """
    if recipe == "logits":
        return np.asarray(logits, dtype=np.float32)
    if recipe != "embedding+logits":
        raise ValueError(f"unknown sequence feature recipe {recipe!r} "
                         f"(known: {', '.join(FEATURE_RECIPES)})")
    return np.concatenate([embeddings, logits], axis=1).astype(np.float32)


@torch.no_grad()
def embed_batch(
    model: SliceModel, x: torch.Tensor, tta_flip: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings (B, D) and logits (B, L) of a batch (B, C, H, W), averaged over a left-right
    flip when ``tta_flip`` (heads are nearly symmetric; the average is steadier)."""
    emb = model.embed(x)
    logits = model.head(emb)
    if tta_flip:
        emb_f = model.embed(torch.flip(x, dims=[-1]))
        emb = (emb + emb_f) / 2
        logits = (logits + model.head(emb_f)) / 2
    return emb, logits
