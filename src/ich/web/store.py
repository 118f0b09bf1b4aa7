"""SQLite store of studies, series, slices, jobs and results, with files beside it.

Why SQLite: one file, transactional, survives restarts, no server to run. Uploaded files are
kept under content-addressed names (the SHA-256 of their bytes), so a name sent by a browser is
never used as a path. Each series' HU is kept as one int16 ``.npy`` (T, H, W) in slice order so
rendering a slice is a memory-mapped read, not a DICOM decode.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ich.atomic import atomic_path

SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    id TEXT PRIMARY KEY, study_instance_uid TEXT, patient_id TEXT, description TEXT,
    received REAL, n_slices INTEGER, errors TEXT DEFAULT '[]');
CREATE TABLE IF NOT EXISTS series (
    id TEXT PRIMARY KEY, study_id TEXT REFERENCES studies(id) ON DELETE CASCADE,
    series_instance_uid TEXT, n_slices INTEGER, rows INTEGER, columns INTEGER);
CREATE TABLE IF NOT EXISTS slices (
    series_id TEXT REFERENCES series(id) ON DELETE CASCADE, idx INTEGER,
    sop_instance_uid TEXT, z REAL, sha256 TEXT, meta TEXT, PRIMARY KEY (series_id, idx));
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, series_id TEXT REFERENCES series(id) ON DELETE CASCADE,
    status TEXT, created REAL, started REAL, finished REAL, error TEXT);
CREATE TABLE IF NOT EXISTS results (
    series_id TEXT PRIMARY KEY REFERENCES series(id) ON DELETE CASCADE,
    slice_probs TEXT, cnn_probs TEXT, study_probs TEXT, created REAL);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
CREATE INDEX IF NOT EXISTS series_study ON series(study_id);
"""

#: Job states; a job found "running" at startup was interrupted and is queued again.
JOB_STATES = ("queued", "running", "done", "failed")


def new_id() -> str:
    """A short random identifier (not derived from patient data, so safe in URLs and logs)."""
    return uuid.uuid4().hex[:16]


class Store:
    """Thread-safe access to the database and the files under ``root``.

    One connection guarded by a lock: the web app's traffic is a handful of small queries per
    request, so serialising them is simpler than a pool and never sees a half-written study.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "files").mkdir(exist_ok=True)
        (self.root / "arrays").mkdir(exist_ok=True)
        self._lock = threading.RLock()
        self._held: Counter[str] = Counter()  # files of uploads still being ingested
        self._db = sqlite3.connect(
            self.root / "ich.sqlite", check_same_thread=False, isolation_level=None
        )
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # Deleted rows are overwritten with zeros, not left in free pages (patient data).
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        # Domain check per result (added later): JSON {"in_domain", "domain_score"} or NULL.
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(results)")}
        if "domain" not in columns:
            self._db.execute("ALTER TABLE results ADD COLUMN domain TEXT")
        # The model's labels per result (added later): JSON list naming the columns of the
        # probabilities; NULL in older rows, which hold the six RSNA labels.
        if "labels" not in columns:
            self._db.execute("ALTER TABLE results ADD COLUMN labels TEXT")
        # Where a study came from when not from an upload (the DICOM node's calling AE title).
        self._db.execute("CREATE TABLE IF NOT EXISTS study_sources (study_id TEXT PRIMARY KEY "
                         "REFERENCES studies(id) ON DELETE CASCADE, source TEXT)")

    def add_schema(self, sql: str) -> None:
        """Create further tables (the DICOM node's) in the same database when missing."""
        with self._lock:
            self._db.executescript(sql)

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A transaction: everything inside commits together or not at all."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """Run a read query and return all rows."""
        with self._lock:
            return list(self._db.execute(sql, params).fetchall())

    # -- files ---------------------------------------------------------------------------
    def file_path(self, sha256: str) -> Path:
        """Where the file with this content hash lives (two-level fan-out)."""
        return self.root / "files" / sha256[:2] / f"{sha256}.dcm"

    def array_path(self, series_id: str) -> Path:
        """The int16 (T, H, W) HU stack of a series, in slice order."""
        return self.root / "arrays" / f"{series_id}.npy"

    def save_array(self, series_id: str, hu: np.ndarray) -> None:
        """Store a series' HU as int16 (values are whole HU; the clip guards odd headers)."""
        arr = np.clip(np.rint(hu), -32768, 32767).astype(np.int16)
        with atomic_path(self.array_path(series_id), suffix=".npy") as tmp:
            np.save(tmp, arr)

    def hold(self, sha256: str) -> None:
        """Mark a stored file as part of an upload in progress (no sweep removes it)."""
        with self._lock:
            self._held[sha256] += 1

    def release(self, hashes: Iterable[str]) -> int:
        """End the holds of an upload and remove its files that no slice row references
        (rejected files: not CT, truncated, duplicates). Returns how many were removed."""
        removed = 0
        with self._lock:
            for sha in hashes:
                self._held[sha] -= 1
                if self._held[sha] <= 0:
                    del self._held[sha]
            unused = {sha for sha in hashes if sha not in self._held} - self._referenced(
                set(hashes))
            for sha in unused:
                if self.file_path(sha).exists():
                    self.file_path(sha).unlink(missing_ok=True)
                    removed += 1
        return removed

    def _referenced(self, hashes: set[str]) -> set[str]:
        if not hashes:
            return set()
        marks = ",".join("?" * len(hashes))
        return {r["sha256"] for r in self.query(
            f"SELECT DISTINCT sha256 FROM slices WHERE sha256 IN ({marks})", tuple(hashes))}

    def sweep(self) -> int:
        """Remove stored files no row references: partial copies of uploads killed half-way,
        files of studies deleted while the server was down, arrays of deleted series.

        Run at startup, before uploads are accepted. Returns how many files were removed.
        """
        with self._lock:
            known = {r["sha256"] for r in self.query("SELECT DISTINCT sha256 FROM slices")}
            series = {r["id"] for r in self.query("SELECT id FROM series")}
            removed = 0
            for path in (self.root / "files").rglob("*"):
                if path.is_file() and (path.suffix != ".dcm" or path.stem not in known) \
                        and path.stem not in self._held:
                    path.unlink(missing_ok=True)
                    removed += 1
            for path in (self.root / "arrays").iterdir():
                if path.is_file() and (path.suffix != ".npy" or path.stem not in series):
                    path.unlink(missing_ok=True)
                    removed += 1
            self.checkpoint()
        return removed

    def checkpoint(self) -> None:
        """Fold the write-ahead log into the database and truncate it, so deleted rows do
        not linger in ``ich.sqlite-wal``."""
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # -- writes --------------------------------------------------------------------------
    def add_study(
        self, study: dict[str, Any], series: list[dict[str, Any]], errors: list[dict[str, str]],
        replace: str | None = None,
    ) -> str:
        """Insert a study with its series and slices and queue one job per series.

        Args:
            study: ``study_instance_uid``, ``patient_id``, ``description``.
            series: dicts with ``id``, ``series_instance_uid``, ``rows``, ``columns`` and
                ``slices`` (list of dicts ``sop_instance_uid``, ``z``, ``sha256``, ``meta``).
            errors: per-file problems of the upload, kept with the study.
            replace: id of a stored study this one supersedes (a partial upload completed):
                its rows go, and the new study takes its id, so links to it stay valid.
        """
        sid = replace or new_id()
        now = time.time()
        n = sum(len(s["slices"]) for s in series)
        old_series = [r["id"] for r in self.query(
            "SELECT id FROM series WHERE study_id=?", (replace,))] if replace else []
        with self.tx() as db:
            if replace:
                db.execute("DELETE FROM studies WHERE id=?", (replace,))
            db.execute(
                "INSERT INTO studies VALUES (?,?,?,?,?,?,?)",
                (sid, study["study_instance_uid"], study["patient_id"],
                 study.get("description", ""), now, n, json.dumps(errors)),
            )
            for s in series:
                db.execute(
                    "INSERT INTO series VALUES (?,?,?,?,?,?)",
                    (s["id"], sid, s["series_instance_uid"], len(s["slices"]),
                     s["rows"], s["columns"]),
                )
                db.executemany(
                    "INSERT INTO slices VALUES (?,?,?,?,?,?)",
                    [(s["id"], i, x["sop_instance_uid"], x["z"], x["sha256"],
                      json.dumps(x["meta"])) for i, x in enumerate(s["slices"])],
                )
                db.execute(
                    "INSERT INTO jobs (series_id, status, created) VALUES (?, 'queued', ?)",
                    (s["id"], now),
                )
        for ser in old_series:
            self.array_path(ser).unlink(missing_ok=True)
        return sid

    def find_study(self, study_instance_uid: str, hashes: set[str]) -> str | None:
        """The stored study with this StudyInstanceUID made of exactly these files, if any.

        Why: uploading the same study twice (a second drag of the folder, a retry after a lost
        response) should show the study already there, not a second copy of it in the
        worklist. A study whose processing failed does not count, so a re-upload retries it.
        """
        for row in self.query(
            "SELECT id FROM studies WHERE study_instance_uid=? AND id NOT IN (SELECT study_id "
            "FROM series JOIN jobs ON jobs.series_id = series.id WHERE jobs.status='failed')",
            (study_instance_uid,),
        ):
            stored = {r["sha256"] for r in self.query(
                "SELECT sha256 FROM slices JOIN series ON slices.series_id = series.id "
                "WHERE series.study_id=?", (row["id"],))}
            if stored == hashes:
                return str(row["id"])
        return None

    def find_partial(self, study_instance_uid: str, hashes: set[str]) -> str | None:
        """A stored study with this StudyInstanceUID whose files are all among ``hashes`` (a
        partial upload that this one completes), if any."""
        for row in self.query("SELECT id FROM studies WHERE study_instance_uid=? "
                              "ORDER BY received DESC", (study_instance_uid,)):
            stored = {r["sha256"] for r in self.query(
                "SELECT sha256 FROM slices JOIN series ON slices.series_id = series.id "
                "WHERE series.study_id=?", (row["id"],))}
            if stored and stored < hashes:
                return str(row["id"])
        return None

    def add_errors_only(self, errors: list[dict[str, str]]) -> str:
        """Record an upload in which no file was usable, so the reasons can be looked up."""
        sid = new_id()
        with self.tx() as db:
            db.execute(
                "INSERT INTO studies VALUES (?,?,?,?,?,?,?)",
                (sid, "", "", "no readable DICOM", time.time(), 0, json.dumps(errors)),
            )
        return sid

    def set_result(self, series_id: str, slice_probs: np.ndarray, cnn_probs: np.ndarray,
                   study_probs: np.ndarray, domain: dict[str, Any] | None = None,
                   labels: Sequence[str] | None = None) -> None:
        """Store a series' probabilities (slice arrays in the stored slice order), its
        domain check (``{"in_domain", "domain_score"}``, None when the model has none) and the
        model's labels naming the columns (None: the six RSNA labels).

        Why the labels are stored with each result: the same data folder may be served later
        by a run with another label set; each result keeps the names it was made with.
        """
        with self.tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO results (series_id, slice_probs, cnn_probs, "
                "study_probs, created, domain, labels) VALUES (?,?,?,?,?,?,?)",
                (series_id, json.dumps(np.asarray(slice_probs, float).round(6).tolist()),
                 json.dumps(np.asarray(cnn_probs, float).round(6).tolist()),
                 json.dumps(np.asarray(study_probs, float).round(6).tolist()), time.time(),
                 json.dumps(domain) if domain is not None else None,
                 json.dumps(list(labels)) if labels is not None else None),
            )

    def set_source(self, study_id: str, source: str) -> None:
        """Record where a study came from (e.g. ``DICOM from CT_SCANNER``)."""
        with self.tx() as db:
            db.execute("INSERT OR REPLACE INTO study_sources VALUES (?,?)", (study_id, source))

    def sources(self) -> dict[str, str]:
        """Study id -> source, for the studies that did not come from an upload."""
        return {r[0]: r[1] for r in self.query("SELECT study_id, source FROM study_sources")}

    def add_errors(self, study_id: str, errors: list[dict[str, str]]) -> None:
        """Append problems found after ingest (e.g. series the DICOM node did not analyse)."""
        with self.tx() as db:
            row = db.execute("SELECT errors FROM studies WHERE id=?", (study_id,)).fetchone()
            if row is not None:
                db.execute("UPDATE studies SET errors=? WHERE id=?",
                           (json.dumps(json.loads(row[0] or "[]") + errors), study_id))

    def sends(self, study_id: str) -> list[dict[str, Any]]:
        """Results the DICOM node sent (or is still sending) for a study: what, where, when,
        status; empty when no node ever ran on this data folder."""
        if not self.query("SELECT 1 FROM sqlite_master WHERE name='node_outbox'"):
            return []
        return [dict(r) for r in self.query(
            "SELECT sop_instance_uid, sop_class_uid, destination, status, attempts, created, "
            "sent, error FROM node_outbox WHERE study_id=? ORDER BY id", (study_id,))]

    def delete_study(self, study_id: str) -> bool:
        """Remove a study, its rows and files no other study still uses; False if unknown."""
        series_ids = [r["id"] for r in self.query(
            "SELECT id FROM series WHERE study_id=?", (study_id,))]
        with self.tx() as db:
            hashes = {r["sha256"] for r in db.execute(
                "SELECT sha256 FROM slices WHERE series_id IN (SELECT id FROM series "
                "WHERE study_id=?)", (study_id,))}
            cur = db.execute("DELETE FROM studies WHERE id=?", (study_id,))
            if cur.rowcount == 0:
                return False
            marks = ",".join("?" * len(hashes))
            still = {r["sha256"] for r in db.execute(
                f"SELECT DISTINCT sha256 FROM slices WHERE sha256 IN ({marks})", tuple(hashes))}
        for sha in hashes - still:
            self.file_path(sha).unlink(missing_ok=True)
        for ser in series_ids:
            self.array_path(ser).unlink(missing_ok=True)
        self.checkpoint()
        return True
