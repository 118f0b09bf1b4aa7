"""Read side of the store: the JSON the API returns and the CSV download.

Why separate from ``store.py``: the store only knows rows; this module decides what a study
*means* to a reader — its status, progress, probabilities (max over its series), flags and the
global slice numbering the viewer scrolls through.

Probabilities are keyed by the labels of the run that made them (stored with each result):
the six RSNA labels, a subset, or the run's own such as ``hemorrhage``. Studies are ranked by
p(any), or by the maximum over the labels when the run has no ``any``; a label is flagged at
or above its operating threshold (the run's, 0.5 where it has none).
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ich.labels import LABELS
from ich.web.predictor import DEFAULT_THRESHOLD, triage_label, triage_score
from ich.web.store import Store

#: Probability at or above which a label is shown as a flag when the run chose no threshold.
FLAG_THRESHOLD = DEFAULT_THRESHOLD
NOTICE = "Research use only — not for diagnosis."
log = logging.getLogger("ich.web")


def _labelled(values: list[float] | None, labels: Sequence[str]) -> dict[str, float] | None:
    return None if values is None else {k: float(v) for k, v in zip(labels, values, strict=True)}


def result_labels(series_row: Mapping[str, Any]) -> tuple[str, ...]:
    """The labels naming a stored result's columns. Rows stored before results carried their
    labels hold the six RSNA labels (the only set then): that default is deliberate."""
    stored = series_row.get("labels")
    return tuple(json.loads(stored)) if stored else LABELS


def stored_labels(store: Store) -> tuple[str, ...] | None:
    """The labels of the newest stored result (None when there is none): what the data
    folder's results are keyed by while no model is loaded."""
    rows = store.query("SELECT labels FROM results ORDER BY created DESC LIMIT 1")
    return result_labels(dict(rows[0])) if rows else None


def _threshold(thresholds: Mapping[str, float] | None, label: str) -> float:
    return float((thresholds or {}).get(label, FLAG_THRESHOLD))


def _status(job_states: list[str], n_series: int) -> str:
    """One word for a study: queued, processing, done, failed (or partial when mixed)."""
    if n_series == 0:
        return "failed"
    if "running" in job_states:
        return "processing"
    if "queued" in job_states:
        return "processing" if "done" in job_states else "queued"
    if "failed" in job_states:
        return "partial" if "done" in job_states else "failed"
    return "done"


def _series_rows(store: Store, study_ids: list[str] | None) -> dict[str, list[dict[str, Any]]]:
    """Series of the given studies (all when None) with job state and results, grouped."""
    sql = (
        "SELECT s.*, j.status AS job_status, j.error AS job_error, r.study_probs, "
        "r.slice_probs, r.cnn_probs, r.domain, r.labels FROM series s "
        "LEFT JOIN jobs j ON j.id = (SELECT MAX(id) FROM jobs WHERE series_id = s.id) "
        "LEFT JOIN results r ON r.series_id = s.id"
    )
    params: tuple[Any, ...] = ()
    if study_ids is not None:
        sql += " WHERE s.study_id IN ({})".format(",".join("?" * len(study_ids)))
        params = tuple(study_ids)
    out: dict[str, list[dict[str, Any]]] = {}
    for row in store.query(sql + " ORDER BY s.rowid", params):
        out.setdefault(row["study_id"], []).append(dict(row))
    return out


def _study_probabilities(done: list[dict[str, Any]]) -> dict[str, float] | None:
    """Per label, the maximum over the finished series (labels in the order first seen)."""
    if not done:
        return None
    out: dict[str, float] = {}
    for s in done:
        for label, p in (_labelled(json.loads(s["study_probs"]), result_labels(s)) or {}).items():
            out[label] = max(p, out.get(label, p))
    return out


def _flags(labelled: dict[str, float] | None,
           thresholds: Mapping[str, float] | None) -> list[str]:
    """Labels at or above their threshold; ``any`` is the ranking score, not a finding."""
    return [k for k, v in (labelled or {}).items()
            if k != "any" and v >= _threshold(thresholds, k)]


def _summary(study: dict[str, Any], series: list[dict[str, Any]],
             thresholds: Mapping[str, float] | None = None) -> dict[str, Any]:
    states = [s["job_status"] or "queued" for s in series]
    done = [s for s in series if s["study_probs"] is not None]
    n_done = sum(s["n_slices"] for s in done)
    labelled = _study_probabilities(done)
    return {
        "id": study["id"],
        "status": _status(states, len(series)),
        "progress": round(n_done / study["n_slices"], 3) if study["n_slices"] else 0.0,
        "received": study["received"],
        "study_instance_uid": study["study_instance_uid"],
        "patient_id": study["patient_id"],
        "n_series": len(series),
        "n_slices": study["n_slices"],
        "probabilities": labelled,
        "labels": list(labelled or ()),
        "score": triage_score(labelled),
        "flags": _flags(labelled, thresholds),
        "n_errors": len(json.loads(study["errors"] or "[]")),
        "source": study.get("source") or "upload",  # set by the callers that know it
        **_domain_summary(done),
    }


#: What the app says about a series outside the model's training data.
OUT_OF_DOMAIN_NOTE = "outside the model's training data: results unreliable"


def _domain(series_row: dict[str, Any]) -> dict[str, Any]:
    """``in_domain`` (None: unknown) and ``domain_score`` of one series' stored result."""
    d = json.loads(series_row.get("domain") or "null") or {}
    return {"in_domain": d.get("in_domain"), "domain_score": d.get("domain_score")}


def _domain_summary(done: list[dict[str, Any]]) -> dict[str, Any]:
    """A study is out of domain when any finished series is: its results are unreliable."""
    flags = [_domain(s)["in_domain"] for s in done]
    known = [f for f in flags if f is not None]
    in_domain = None if not known else all(known)
    return {"in_domain": in_domain,
            "domain_note": OUT_OF_DOMAIN_NOTE if in_domain is False else None}


def _rank(item: dict[str, Any]) -> tuple[int, float]:
    """Worklist order: finished by p(any) (or the largest label's p) descending, then pending
    by newest, failed last."""
    p = item["score"]
    if p is not None:
        return (0, -p)
    return (2 if item["status"] == "failed" else 1, -item["received"])


def list_studies(
    store: Store, q: str = "", status: str = "", flag: str = "",
    thresholds: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """All studies, most suspicious first, optionally filtered by text, status or flag (a
    label flagged at its threshold; ``any`` at p(any) >= its threshold)."""
    series = _series_rows(store, None)
    sources = store.sources()
    items = [_summary({**dict(r), "source": sources.get(r["id"])}, series.get(r["id"], []),
                      thresholds)
             for r in store.query("SELECT * FROM studies")]
    if q:
        needle = q.lower()
        items = [i for i in items if needle in " ".join(
            (i["id"], i["patient_id"], i["study_instance_uid"])).lower()]
    if status:
        items = [i for i in items if i["status"] == status]
    if flag:
        items = [i for i in items if flag in i["flags"] or (
            flag == "any" and triage_label(i["labels"]) == "any"
            and i["probabilities"]["any"] >= _threshold(thresholds, "any"))]
    return sorted(items, key=_rank)


def study_detail(store: Store, study_id: str,
                 thresholds: Mapping[str, float] | None = None) -> dict[str, Any] | None:
    """Status, series and every slice in order (global ``index``), or None if unknown."""
    rows = store.query("SELECT * FROM studies WHERE id=?", (study_id,))
    if not rows:
        return None
    study = {**dict(rows[0]), "source": store.sources().get(study_id)}
    series = _series_rows(store, [study_id]).get(study_id, [])
    out = _summary(study, series, thresholds)
    out["errors"] = json.loads(study["errors"] or "[]")
    out["sends"] = store.sends(study_id)
    out["series"] = []
    index = 0
    for s in series:
        slices = store.query(
            "SELECT idx, sop_instance_uid, z FROM slices WHERE series_id=? ORDER BY idx",
            (s["id"],))
        sp = json.loads(s["slice_probs"]) if s["slice_probs"] else None
        cp = json.loads(s["cnn_probs"]) if s["cnn_probs"] else None
        labels = result_labels(s)
        out["series"].append({
            "id": s["id"], "series_instance_uid": s["series_instance_uid"],
            "n_slices": s["n_slices"], "rows": s["rows"], "columns": s["columns"],
            "status": s["job_status"] or "queued", "error": s["job_error"],
            "probabilities": _labelled(
                json.loads(s["study_probs"]) if s["study_probs"] else None, labels),
            **_domain(s),
            "first_index": index,
            "slices": [{
                "index": index + k, "sop_instance_uid": r["sop_instance_uid"], "z": r["z"],
                "probabilities": _labelled(sp[k], labels) if sp else None,
                "cnn_probabilities": _labelled(cp[k], labels) if cp else None,
            } for k, r in enumerate(slices)],
        })
        index += len(slices)
    return out


def locate_slice(store: Store, study_id: str, index: int) -> tuple[str, int, int] | None:
    """(series id, position in series, series length) of a study-wide slice index."""
    rows = store.query(
        "SELECT id, n_slices FROM series WHERE study_id=? ORDER BY rowid", (study_id,))
    start = 0
    for r in rows:
        if start <= index < start + r["n_slices"]:
            return r["id"], index - start, r["n_slices"]
        start += r["n_slices"]
    return None


def slice_meta(store: Store, series_id: str, pos: int) -> dict[str, Any]:
    """The stored header fields of one slice."""
    rows = store.query("SELECT meta FROM slices WHERE series_id=? AND idx=?", (series_id, pos))
    return json.loads(rows[0]["meta"]) if rows else {}


#: First characters that make a spreadsheet read a cell as a formula (CSV injection).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_text(value: object) -> str:
    """A text cell safe to open in a spreadsheet: formula-like text gets a leading quote."""
    text = str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def results_csv(detail: dict[str, Any]) -> str:
    """One row per slice: study, series, index, SOPInstanceUID, z and one probability per label
    of the study's results (the run's labels)."""
    labels = list(detail["labels"])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["study_id", "series_instance_uid", "index", "sop_instance_uid", "z",
                     *labels])
    for s in detail["series"]:
        for sl in s["slices"]:
            probs = sl["probabilities"] or {}
            # Identifiers come from DICOM headers (anyone's text): escaped; numbers stay numbers.
            writer.writerow([csv_text(detail["id"]), csv_text(s["series_instance_uid"]),
                             sl["index"], csv_text(sl["sop_instance_uid"]), f"{sl['z']:.3f}",
                             *(f"{probs[k]:.6f}" if k in probs else "" for k in labels)])
    return buf.getvalue()


def load_hu(store: Store, series_id: str) -> np.ndarray:
    """The series' int16 HU stack, memory-mapped (a read touches only the slice asked for)."""
    return np.load(store.array_path(series_id), mmap_mode="r")


def log_upload(study_ids: list[str], seconds: float) -> None:
    """Log an upload by our random study ids only (no patient identifiers in logs)."""
    log.info("stored upload as %s in %.2f s", ",".join(study_ids), seconds)
