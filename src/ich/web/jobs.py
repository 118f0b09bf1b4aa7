"""Background prediction: one worker thread runs the Predictor over queued series.

Why one thread and a database-backed queue: the model is loaded once and uses all cores itself,
so running series one after another is as fast as running them together, and a queue in SQLite
survives restarts — a job found "running" at startup was interrupted and is queued again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

import numpy as np

from ich.background import BackgroundLoop
from ich.dicom.io import SliceMeta
from ich.web.predictor import PredictorLike
from ich.web.store import Store

log = logging.getLogger("ich.web")


def requeue_interrupted(store: Store) -> int:
    """Put jobs left "running" by a stopped server back in the queue; return how many."""
    with store.tx() as db:
        cur = db.execute("UPDATE jobs SET status='queued', started=NULL WHERE status='running'")
        return int(cur.rowcount)


def claim_next(store: Store) -> tuple[int, str] | None:
    """Mark the oldest queued job running and return (job id, series id), or None."""
    with store.tx() as db:
        row = db.execute(
            "SELECT id, series_id FROM jobs WHERE status='queued' ORDER BY id LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        db.execute("UPDATE jobs SET status='running', started=? WHERE id=?", (time.time(), row[0]))
        return int(row[0]), str(row[1])


def finish(store: Store, job_id: int, error: str | None = None) -> None:
    """Record the end of a job ("done", or "failed" with a reason a person can read)."""
    with store.tx() as db:
        db.execute(
            "UPDATE jobs SET status=?, finished=?, error=? WHERE id=?",
            ("failed" if error else "done", time.time(), error, job_id),
        )


def load_series(store: Store, series_id: str) -> tuple[np.ndarray, list[SliceMeta]]:
    """The stored HU stack (T, H, W) int16 and the slice headers, in stored order."""
    rows = store.query("SELECT meta FROM slices WHERE series_id=? ORDER BY idx", (series_id,))
    metas = [_meta_from_json(json.loads(r["meta"])) for r in rows]
    return np.load(store.array_path(series_id), mmap_mode="r"), metas


def _meta_from_json(d: dict[str, object]) -> SliceMeta:
    for key in ("image_position_patient", "image_orientation_patient", "pixel_spacing"):
        if isinstance(d.get(key), list):
            d[key] = tuple(d[key])  # type: ignore[arg-type]
    return SliceMeta(path="", **{k: v for k, v in d.items() if k != "path"})  # type: ignore[arg-type]


def run_job(store: Store, predictor: PredictorLike, series_id: str) -> None:
    """Predict one series and store its probabilities in the stored slice order."""
    hu, metas = load_series(store, series_id)
    hus = [np.asarray(h, dtype=np.float32) for h in hu]
    pred = predictor.predict_slices(hus, metas)
    order = np.asarray(pred.order, dtype=int)
    # The predictor returns rows in its own slice order; map them back to input positions.
    labels = tuple(predictor.labels)
    if np.shape(pred.slice_probs)[1:] != (len(labels),):
        raise ValueError(f"the model returned {np.shape(pred.slice_probs)[1:]} columns for "
                         f"its {len(labels)} labels ({', '.join(labels)})")
    slice_probs = np.empty((len(hus), len(labels)), np.float64)
    cnn_probs = np.empty((len(hus), len(labels)), np.float64)
    slice_probs[order] = np.asarray(pred.slice_probs)
    cnn_probs[order] = np.asarray(pred.cnn_probs)
    in_domain = getattr(pred, "in_domain", None)  # None: the model has no domain check
    domain = None if in_domain is None else {
        "in_domain": bool(in_domain),
        "domain_score": round(float(getattr(pred, "domain_score", "nan")), 4)}
    store.set_result(series_id, slice_probs, cnn_probs, np.asarray(pred.study_probs), domain,
                     labels)


class Worker(BackgroundLoop):
    """The single background thread; ``wake()`` after queuing work so it starts at once."""

    def __init__(self, store: Store, get_predictor: Callable[[], PredictorLike | None],
                 model_lock: threading.Lock | None = None) -> None:
        super().__init__("ich-worker", idle_seconds=1.0)
        self.store = store
        self.get_predictor = get_predictor
        self.model_lock = model_lock or threading.Lock()
        self.busy = False

    def start(self) -> None:
        """Re-queue interrupted jobs and start processing."""
        n = requeue_interrupted(self.store)
        if n:
            log.info("re-queued %d job(s) interrupted by the last shutdown", n)
        super().start()

    def step(self) -> bool:
        """Run the next queued job, if a model is loaded and there is one."""
        predictor = self.get_predictor()
        job = claim_next(self.store) if predictor is not None else None
        if job is None:
            return False
        self._run(predictor, *job)  # type: ignore[arg-type]
        return True

    def _run(self, predictor: PredictorLike, job_id: int, series_id: str) -> None:
        start = time.perf_counter()
        self.busy = True
        try:
            with self.model_lock:  # heatmaps share the model; Grad-CAM hooks are not reentrant
                run_job(self.store, predictor, series_id)
        except Exception as exc:  # record and carry on with the next series
            log.exception("job %d (series %s) failed", job_id, series_id)
            finish(self.store, job_id, f"prediction failed: {type(exc).__name__}: {exc}")
        else:
            finish(self.store, job_id)
            log.info("job %d (series %s) done in %.2f s", job_id, series_id,
                     time.perf_counter() - start)
        finally:
            self.busy = False
