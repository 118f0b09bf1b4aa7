"""Temperature scaling of the study sequence model, fitted on the validation fold.

Why: a single run's stage 2 trains on embeddings of slices its own CNN has fitted, which are
cleaner and further apart than those of patients neither model has seen, so its probabilities
come out too extreme on new patients. Dividing every logit by one temperature keeps the ranking
(AUC) and repairs much of the log loss (Guo et al. 2017, "On calibration of modern neural
networks"). Measured on the demo recipe at 96 px: the best temperature was 1.3-1.4 on the
held-out phantom fold and 1.4-1.5 on an independent phantom (1.1-1.35 fitted at 128 px). One
scalar fitted on a few hundred validation slices can hardly overfit them; per-label temperatures
could, with a handful of positives per fold for the rare subtypes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit

from ich.eval.metrics import weighted_log_loss
from ich.labels import LABELS

#: Temperatures searched: beyond them a fold is too small or too odd to be trusted.
TEMPERATURE_RANGE = (0.5, 4.0)
#: Probabilities are clipped this far from 0 and 1 before their logits are taken.
_EPS = 1e-7


def scale_probabilities(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``sigmoid(logit(probs) / temperature)``: what the model would give at ``temperature``."""
    p = np.clip(np.asarray(probs, dtype=np.float64), _EPS, 1.0 - _EPS)
    return np.asarray(expit((np.log(p) - np.log1p(-p)) / temperature), dtype=np.float32)


def fit_temperature(
    y_true: np.ndarray, probs: np.ndarray, labels: Sequence[str] = LABELS
) -> float | None:
    """The temperature in :data:`TEMPERATURE_RANGE` that minimises the weighted log loss.

    Args:
        y_true: Slice labels (N, K) of the validation fold.
        probs: The model's probabilities (N, K) at temperature 1.
        labels: Names of the K columns (``any`` weighs 2 in the metric).

    Returns:
        The temperature, or None when the fold cannot tell (no positive or no negative slice):
        then the model keeps its own probabilities.
    """
    y = np.asarray(y_true, dtype=np.float64)
    if y.size == 0 or not ((y == 1).any() and (y == 0).any()):
        return None
    result = minimize_scalar(
        lambda t: weighted_log_loss(y, scale_probabilities(probs, t), labels=labels),
        bounds=TEMPERATURE_RANGE, method="bounded", options={"xatol": 1e-3},
    )
    return float(result.x)
