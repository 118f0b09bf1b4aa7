"""The state the web routes share (:class:`AppState`), apart from the app factory.

Why its own module: the routes need the type and :mod:`ich.web.app` needs the routes; with the
state here neither imports the other.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from ich.labels import LABELS
from ich.runs.provenance import ModelProvenance
from ich.web.heatpool import HeatmapPool
from ich.web.jobs import Worker
from ich.web.predictor import PredictorLike, run_thresholds
from ich.web.render import PngCache
from ich.web.settings import WebSettings
from ich.web.store import Store
from ich.web.views import stored_labels


@dataclass
class AppState:
    """Everything the routes share: settings, store, worker, predictor and image cache."""

    settings: WebSettings
    store: Store
    cache: PngCache
    predictor: PredictorLike | None = None
    predictor_error: str | None = None
    model_lock: threading.Lock = field(default_factory=threading.Lock)
    worker: Worker | None = None
    heat_pool: HeatmapPool = field(default_factory=HeatmapPool)
    warmed: threading.Event = field(default_factory=threading.Event)
    _thresholds: tuple[int, dict[str, float]] | None = field(default=None, repr=False)

    def get_predictor(self) -> PredictorLike | None:
        """The predictor once loaded (the worker polls this)."""
        return self.predictor

    def labels(self) -> tuple[str, ...]:
        """The labels results are keyed by: the loaded run's; before it loads, those of the
        newest stored result; with neither, the six RSNA labels (a deliberate default: the
        labels every result had before runs chose their own)."""
        if self.predictor is not None:
            return tuple(self.predictor.labels)
        return stored_labels(self.store) or LABELS

    def thresholds(self) -> dict[str, float]:
        """The loaded run's per-label operating thresholds (empty: 0.5 for every label),
        read once per predictor."""
        predictor = self.predictor
        if predictor is None:
            return {}
        if self._thresholds is None or self._thresholds[0] != id(predictor):
            self._thresholds = (id(predictor), run_thresholds(predictor))
        return self._thresholds[1]

    def provenance(self) -> dict[str, object]:
        """What the model was trained on, shown on every page."""
        if self.predictor is not None:
            return public_provenance(self.predictor.provenance)
        if self.predictor_error:
            return {"note": f"model failed to load: {self.predictor_error}"}
        if self.settings.model_dir is None:
            return {"note": "no model configured (start with --model RUN)"}
        return {"note": "model loading"}


def public_provenance(provenance: ModelProvenance) -> dict[str, object]:
    """Provenance for clients: run folders and paths by name only (server paths are not their
    business)."""
    return provenance.to_json(public=True)
