"""One stable study, end to end: headers → series selection → the web app's store and job queue →
probabilities → SR + key images → outbox rows, committed together.

Why through the web store: a study received over DICOM is then in ``ich serve``'s worklist with
its source, and the prediction runs on the same job queue (the web worker, or the node's own
when it runs alone). The node waits for the study's jobs, then encodes the results.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from ich.atomic import atomic_path
from ich.errors import IchError
from ich.net.outbox import enqueue
from ich.net.peers import hash_id
from ich.net.sc import build_sc, render_key_image
from ich.net.selection import SelectionRules, SeriesDecision, select_series
from ich.net.sr import OUT_OF_DOMAIN_NOTE, TriageResult, build_sr
from ich.net.state import Instance, NodeState
from ich.web.ingest import ingest
from ich.web.predictor import DEFAULT_THRESHOLD, PredictorLike, run_thresholds, triage_name
from ich.web.views import result_labels

log = logging.getLogger("ich.net")


class TriageError(IchError):
    """A study could not be triaged (the reason is recorded with the study and retried)."""


@dataclass
class TriageConfig:
    """How studies are triaged and where results go.

    Attributes:
        aet: This node's AE title (names the SR's observer device).
        destinations: ``dimse:AET@HOST:PORT`` and ``stow:URL`` targets of every result.
        rules: Series selection rules.
        threshold: Probability at or above which a finding is reported present, for every
            label; None: the run's per-label thresholds (0.5 where it has none).
        key_images: Secondary Capture key images per study.
        job_timeout: Seconds to wait for the study's prediction jobs.
    """

    aet: str = "ICH"
    destinations: list[str] = field(default_factory=list)
    rules: SelectionRules = field(default_factory=SelectionRules)
    threshold: float | None = None
    key_images: int = 3
    job_timeout: float = 600.0


@dataclass
class Services:
    """What triage borrows from the process: the model, its lock, the worker's wake-up."""

    get_predictor: Callable[[], PredictorLike | None]
    wake_worker: Callable[[], None]
    model_lock: threading.Lock


def read_headers(state: NodeState, instances: list[Instance]) -> dict[str, Dataset]:
    """Headers (no pixel data) by SOP Instance UID; unreadable files are left out and logged."""
    out: dict[str, Dataset] = {}
    for inst in instances:
        try:
            out[inst.sop_instance_uid] = pydicom.dcmread(
                state.file_path(inst.sha256), stop_before_pixels=True)
        except Exception as exc:
            log.warning("instance %s unreadable: %s", hash_id(inst.sop_instance_uid),
                        type(exc).__name__)
    return out


def _files(state: NodeState, instances: list[Instance]) -> Iterator[tuple[str, IO[bytes]]]:
    for inst in instances:  # one open file at a time: ingest copies each before the next
        with open(state.file_path(inst.sha256), "rb") as fh:
            yield f"instance {hash_id(inst.sop_instance_uid)}", fh


def _wait_for_jobs(state: NodeState, study_id: str, services: Services, timeout: float) -> None:
    services.wake_worker()
    deadline = time.monotonic() + timeout
    while True:
        rows = state.store.query(
            "SELECT jobs.status FROM jobs JOIN series ON jobs.series_id = series.id "
            "WHERE series.study_id=?", (study_id,))
        if all(r["status"] in ("done", "failed") for r in rows):
            return
        if time.monotonic() > deadline:
            raise TriageError(f"prediction did not finish within {timeout:.0f} s")
        time.sleep(0.05)


@dataclass
class _SeriesResult:
    series_id: str
    slice_probs: np.ndarray  # (T, L) in stored (z) order, columns named by labels
    study_probs: np.ndarray  # (L,)
    sops: list[str]  # SOP Instance UID per stored slice
    in_domain: bool | None = None  # None: the model has no domain check
    domain_score: float | None = None
    labels: tuple[str, ...] = ()  # the run's labels the result was made with

    def column(self, label: str) -> int | None:
        """The column of ``label`` (None when this result has no such label)."""
        return self.labels.index(label) if label in self.labels else None

    def scores(self) -> np.ndarray:
        """(T,) per-slice triage score: p(any), or the largest label's p without ``any``."""
        k = self.column("any")
        return self.slice_probs[:, k] if k is not None else self.slice_probs.max(axis=1)


def _results(state: NodeState, study_id: str) -> list[_SeriesResult]:
    out = []
    for r in state.store.query(
            "SELECT series.id AS id, results.slice_probs AS sp, results.study_probs AS st, "
            "results.domain AS domain, results.labels AS labels "
            "FROM series JOIN results ON results.series_id = series.id "
            "WHERE series.study_id=?", (study_id,)):
        sops = [str(s["sop_instance_uid"]) for s in state.store.query(
            "SELECT sop_instance_uid FROM slices WHERE series_id=? ORDER BY idx", (r["id"],))]
        domain = json.loads(r["domain"] or "null") or {}
        flag, score = domain.get("in_domain"), domain.get("domain_score")
        out.append(_SeriesResult(
            str(r["id"]), np.asarray(json.loads(r["sp"]), float),
            np.asarray(json.loads(r["st"]), float), sops,
            None if flag is None else bool(flag),
            None if score is None or not np.isfinite(float(score)) else float(score),
            result_labels(dict(r))))
    return out


def _study_labels(series: list[_SeriesResult]) -> tuple[tuple[str, ...], np.ndarray]:
    """The study's labels (in the order first seen) and per label the maximum over the series
    that predicted it (as the web app's study probabilities)."""
    labels: list[str] = []
    for s in series:
        labels += [label for label in s.labels if label not in labels]
    probs = [max(float(s.study_probs[k]) for s in series
                 if (k := s.column(label)) is not None) for label in labels]
    return tuple(labels), np.asarray(probs, float)


def _thresholds(config: TriageConfig, predictor: PredictorLike | None
                ) -> tuple[float, dict[str, float]]:
    """(threshold for labels without their own, per-label thresholds): ``--threshold`` for
    every label when given, else the run's choice per label and 0.5 for the rest."""
    if config.threshold is not None:
        return config.threshold, {}
    return DEFAULT_THRESHOLD, run_thresholds(predictor) if predictor is not None else {}


def _study_domain(series: list[_SeriesResult]) -> tuple[bool | None, float | None]:
    """The study is outside the training data when any analysed series is (as in the web
    app); its score is the largest series score. (None, None) when no series has a check."""
    flags = [s.in_domain for s in series if s.in_domain is not None]
    scores = [s.domain_score for s in series if s.domain_score is not None]
    return (all(flags) if flags else None), (max(scores) if scores else None)


def _provenance(predictor: PredictorLike) -> str:
    return predictor.provenance.summary()


def _save(ds: Dataset, path: Path) -> None:
    with atomic_path(path, suffix=".dcm") as tmp:
        ds.save_as(tmp, enforce_file_format=True)


def _web_study(state: NodeState, uid: str, eligible: list[Instance], calling_aet: str,
               decisions: list[SeriesDecision], headers: dict[str, Dataset]) -> str:
    """Put the eligible series into the web store (jobs queued); return the web study id."""
    store = state.store
    notes = [{"file": d.label(), "reason": "not analysed: " + "; ".join(d.reasons)}
             for d in decisions if not d.eligible]
    if eligible:
        result = ingest(store, _files(state, eligible), max_files=10**7, max_bytes=1 << 50)
        if not result.study_ids:
            raise TriageError("no eligible instance could be read")
        study_id = result.study_ids[0]
        if study_id in result.existing:  # redone after a restart: already there
            return study_id
    else:
        first = next(iter(headers.values()))
        study_id = store.add_study({"study_instance_uid": uid,
                                    "patient_id": str(first.get("PatientID", "") or ""),
                                    "description": "no eligible series"}, [], [])
    store.set_source(study_id, f"DICOM from {calling_aet}")
    if notes:
        store.add_errors(study_id, notes)
    return study_id


def triage_study(state: NodeState, uid: str, config: TriageConfig, services: Services) -> bool:
    """Triage one claimed-ready study and commit its outputs to the outbox; False if it was
    taken already. Failures are recorded with the study (and retried) instead of raised."""
    mark = state.start_triage(uid)
    if mark is None:
        return False
    start = time.perf_counter()
    try:
        study_id, sr_path, objects = _triage(state, uid, config, services)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        log.warning("study %s: triage failed: %s", hash_id(uid), reason[:300])
        state.fail_triage(uid, reason)
        return True
    row = state.study_row(uid) or {}
    old = row.get("study_id")
    with state.store.tx() as db:
        enqueue(db, uid, study_id, objects, config.destinations)
        db.execute("UPDATE node_studies SET status=CASE WHEN last_received > ? THEN "
                   "'receiving' ELSE 'done' END, study_id=?, sr_path=?, error=NULL, updated=? "
                   "WHERE study_instance_uid=?", (mark, study_id, str(sr_path), time.time(), uid))
    if old and old != study_id:  # superseded: the worklist shows the new version only
        state.store.delete_study(str(old))
    log.info("study %s triaged in %.2f s: %d object(s) queued for %d destination(s)",
             hash_id(uid), time.perf_counter() - start, len(objects), len(config.destinations))
    return True


def _triage(state: NodeState, uid: str, config: TriageConfig, services: Services
            ) -> tuple[str, Path, list[tuple[str, str, str]]]:
    instances = state.instances(uid)
    headers = read_headers(state, instances)
    if not headers:
        raise TriageError("no readable instance")
    by_series: dict[str, list[Instance]] = {}
    for inst in instances:
        if inst.sop_instance_uid in headers:
            by_series.setdefault(inst.series_instance_uid, []).append(inst)
    decisions = [select_series([headers[i.sop_instance_uid] for i in insts], config.rules)
                 for insts in by_series.values()]
    eligible = [i for d, insts in zip(decisions, by_series.values(), strict=True)
                if d.eligible for i in insts]
    row = state.study_row(uid) or {}
    study_id = _web_study(state, uid, eligible, str(row.get("calling_aet") or ""), decisions,
                          headers)
    not_analysed = [f"{d.label()}: {'; '.join(d.reasons)}" for d in decisions if not d.eligible]
    evidence = [headers[i.sop_instance_uid] for i in (eligible or instances)
                if i.sop_instance_uid in headers]
    previous_sr = str(row.get("sr_path") or "")
    if not eligible:
        sr = _build_sr(uid, evidence, None, not_analysed, config, previous_sr)
        return _write_outputs(state, uid, study_id, sr, [], headers)
    _wait_for_jobs(state, study_id, services, config.job_timeout)
    series = _results(state, study_id)
    if not series:
        raise TriageError("prediction failed for every eligible series")
    predictor = services.get_predictor()
    labels, probs = _study_labels(series)
    key_images: dict[str, list[Dataset]] = {}
    for label in labels:
        having = [(s, k) for s in series if (k := s.column(label)) is not None]
        best, k = max(having, key=lambda sk: float(sk[0].slice_probs[:, sk[1]].max()))
        key_images[label] = [headers[best.sops[int(best.slice_probs[:, k].argmax())]]]
    in_domain, domain_score = _study_domain(series)
    threshold, thresholds = _thresholds(config, predictor)
    result = TriageResult(probs, threshold, key_images, not_analysed,
                          _provenance(predictor) if predictor else "", in_domain,
                          domain_score, labels, thresholds)
    # The SR (pure Python in highdicom) is built while the key images' Grad-CAM runs in torch,
    # which releases the GIL: on two cores the two overlap instead of adding up.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ich-sr") as pool:
        sr_future = pool.submit(_build_sr, uid, evidence, result, not_analysed, config,
                                previous_sr)
        key_sc = _key_images(state, series, probs, config, services)
        sr = sr_future.result()
    return _write_outputs(state, uid, study_id, sr, key_sc, headers)


def _key_images(state: NodeState, series: list[_SeriesResult], probs: np.ndarray,
                config: TriageConfig, services: Services
                ) -> list[tuple[str, np.ndarray, str | None]]:
    """(source SOP Instance UID, RGB image, out-of-domain warning or None) for the slices with
    the highest p(any) (or, for a run without ``any``, the highest probability of a label);
    the heatmap shows the slice's likeliest finding other than ``any``."""
    ranked = sorted(((float(score), n, i) for n, s in enumerate(series)
                     for i, score in enumerate(s.scores())), reverse=True)[:config.key_images]
    predictor = services.get_predictor()
    out = []
    for p_top, n, i in ranked:
        s = series[n]
        stack = np.load(state.store.array_path(s.series_id), mmap_mode="r")
        hu = np.asarray(stack[i], np.float32)
        findings = [k for k, label in enumerate(s.labels) if label != "any"] or [0]
        label = s.labels[max(findings, key=lambda k: float(s.slice_probs[i, k]))]
        heat = None
        if predictor is not None and label in predictor.labels:
            neighbours = [np.asarray(stack[min(max(i + o, 0), len(stack) - 1)], np.float32)
                          for o in predictor.offsets]
            try:
                with services.model_lock:
                    heat = predictor.heatmap(hu, label, neighbours)
            except Exception as exc:  # the key image is still useful without the overlay
                log.warning("heatmap failed: %s", type(exc).__name__)
        title = (f"slice {i + 1}/{len(s.sops)}: p({triage_name(s.labels)}) {p_top:.2f}, "
                 f"heatmap {label}")
        warning = _key_warning(s)
        out.append((s.sops[i], render_key_image(hu, heat, s.slice_probs[i], title, warning,
                                                s.labels), warning))
    return out


def _key_warning(series: _SeriesResult) -> str | None:
    """The burnt-in warning of a key image from an out-of-domain series (None otherwise)."""
    if series.in_domain is not False:
        return None
    score = "" if series.domain_score is None else f" (score {series.domain_score:.2f})"
    return f"{OUT_OF_DOMAIN_NOTE}{score}"


def _build_sr(uid: str, evidence: list[Dataset], result: TriageResult | None,
              not_analysed: list[str], config: TriageConfig, previous_sr: str) -> Dataset:
    """The study's SR, superseding the previous version when there is one."""
    previous = []
    if previous_sr and Path(previous_sr).is_file():
        previous = [pydicom.dcmread(previous_sr)]
    number = 1 + (int(previous[0].get("InstanceNumber", 0) or 0) if previous else 0)
    return build_sr(evidence, result, not_analysed, config.aet,
                    str(generate_uid(entropy_srcs=["ich-sr-series", uid, config.aet])), number,
                    previous)


def _write_outputs(state: NodeState, uid: str, study_id: str, sr: Dataset,
                   key_sc: list[tuple[str, np.ndarray, str | None]],
                   headers: dict[str, Dataset]
                   ) -> tuple[str, Path, list[tuple[str, str, str]]]:
    folder = state.outputs_dir / hash_id(uid) / study_id
    objects: list[tuple[str, str, str]] = []
    sr_path = folder / f"sr_{sr.SOPInstanceUID}.dcm"
    _save(sr, sr_path)
    objects.append((str(sr.SOPInstanceUID), str(sr.SOPClassUID), str(sr_path)))
    sc_series = str(generate_uid())
    for n, (sop, rgb, warning) in enumerate(key_sc, start=1):
        sc = build_sc(headers[sop], rgb, sc_series, n, warning)
        path = folder / f"sc_{sc.SOPInstanceUID}.dcm"
        _save(sc, path)
        objects.append((str(sc.SOPInstanceUID), str(sc.SOPClassUID), str(path)))
    return study_id, sr_path, objects
