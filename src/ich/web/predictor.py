"""What the web application needs from a model, as a ``typing.Protocol``.

Why a Protocol: the server must not depend on how the model is built. ``ich.inference.Predictor``
satisfies it, and so does the small deterministic stand-in used by the tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ich.dicom.io import SliceMeta
from ich.runs.provenance import ModelProvenance


class SeriesPredictionLike(Protocol):
    """Result of ``predict_slices`` for one series.

    Attributes:
        order: (T,) indices into the input lists, in slice order along the normal.
        z: (T,) slice positions in mm, in that order.
        slice_probs: (T, 6) final per-slice probabilities in ``ich.LABELS`` order.
        cnn_probs: (T, 6) slice-model probabilities before the sequence model.
        study_probs: (6,) probabilities for the whole series.
    """

    order: np.ndarray
    z: np.ndarray
    slice_probs: np.ndarray
    cnn_probs: np.ndarray
    study_probs: np.ndarray


@runtime_checkable
class PredictorLike(Protocol):
    """The model interface the server is written against (:class:`ich.inference.Predictor`)."""

    @property
    def provenance(self) -> ModelProvenance:
        """What the model is and what data it was trained on (shown on every page)."""
        ...

    @property
    def offsets(self) -> tuple[int, ...]:
        """Slice offsets stacked as channels (e.g. (-1, 0, 1)); ``heatmap`` wants the
        neighbours in this order, the slice itself included."""
        ...

    def predict_slices(
        self, hus: list[np.ndarray], metas: list[SliceMeta]
    ) -> SeriesPredictionLike:
        """Predict one series given its HU slices (any order) and their headers."""
        ...

    def heatmap(
        self, hu: np.ndarray, label: str, neighbours: Sequence[np.ndarray] | None = None
    ) -> np.ndarray:
        """Float32 (H, W) map in [0, 1] of where the model looked for ``label``."""
        ...


def load_predictor(model_dir: Any, device: str = "cpu") -> PredictorLike:
    """Build the real predictor from a run folder (imported here so torch loads only when used)."""
    from ich.inference import Predictor  # type: ignore[import-not-found,unused-ignore]

    predictor: PredictorLike = Predictor.from_run(model_dir, device=device)
    return predictor
