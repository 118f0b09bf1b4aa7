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
from collections.abc import Iterator
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
        self._db = sqlite3.connect(
            self.root / "ich.sqlite", check_same_thread=False, isolation_level=None
        )
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        # Domain check per result (added later): JSON {"in_domain", "domain_score"} or NULL.
        if "domain" not in {r[1] for r in self._db.execute("PRAGMA table_info(results)")}:
            self._db.execute("ALTER TABLE results ADD COLUMN domain TEXT")

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

    # -- writes --------------------------------------------------------------------------
    def add_study(
        self, study: dict[str, Any], series: list[dict[str, Any]], errors: list[dict[str, str]]
    ) -> str:
        """Insert a study with its series and slices and queue one job per series.

        Args:
            study: ``study_instance_uid``, ``patient_id``, ``description``.
            series: dicts with ``id``, ``series_instance_uid``, ``rows``, ``columns`` and
                ``slices`` (list of dicts ``sop_instance_uid``, ``z``, ``sha256``, ``meta``).
            errors: per-file problems of the upload, kept with the study.
        """
        sid = new_id()
        now = time.time()
        n = sum(len(s["slices"]) for s in series)
        with self.tx() as db:
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
                   study_probs: np.ndarray, domain: dict[str, Any] | None = None) -> None:
        """Store a series' probabilities (slice arrays in the stored slice order) and its
        domain check (``{"in_domain", "domain_score"}``, None when the model has none)."""
        with self.tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO results VALUES (?,?,?,?,?,?)",
                (series_id, json.dumps(np.asarray(slice_probs, float).round(6).tolist()),
                 json.dumps(np.asarray(cnn_probs, float).round(6).tolist()),
                 json.dumps(np.asarray(study_probs, float).round(6).tolist()), time.time(),
                 json.dumps(domain) if domain is not None else None),
            )

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
        return True
