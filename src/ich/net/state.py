"""The node's own tables, in the web app's SQLite database (same ``--data``).

Why in the same database: a study received over DICOM must appear in ``ich serve``'s worklist,
and the sends recorded here are shown by ``GET /api/studies/{id}``. Every step of the node
(instance received, association ended, study triaged, object sent) is one transaction, so a
``kill -9`` at any moment loses nothing and repeats nothing that was committed.

Study states: ``receiving`` (instances arriving or waiting for the stable moment), ``triaging``
(found again at startup: interrupted, so it is redone), ``done``, ``failed``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from ich.web.store import Store

SCHEMA = """
CREATE TABLE IF NOT EXISTS node_associations (
    id TEXT PRIMARY KEY, calling_aet TEXT, started REAL, ended REAL, status TEXT);
CREATE TABLE IF NOT EXISTS node_instances (
    sop_instance_uid TEXT PRIMARY KEY, study_instance_uid TEXT, series_instance_uid TEXT,
    sop_class_uid TEXT, sha256 TEXT, assoc TEXT, received REAL);
CREATE TABLE IF NOT EXISTS node_studies (
    study_instance_uid TEXT PRIMARY KEY, calling_aet TEXT, last_received REAL, last_assoc TEXT,
    status TEXT, triage_mark REAL, study_id TEXT, sr_path TEXT, attempts INTEGER DEFAULT 0,
    error TEXT, updated REAL);
CREATE TABLE IF NOT EXISTS node_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, study_instance_uid TEXT, study_id TEXT,
    sop_instance_uid TEXT, sop_class_uid TEXT, path TEXT, destination TEXT, status TEXT,
    attempts INTEGER DEFAULT 0, next_try REAL, created REAL, sent REAL, error TEXT);
CREATE INDEX IF NOT EXISTS node_instances_study ON node_instances(study_instance_uid);
CREATE INDEX IF NOT EXISTS node_outbox_due ON node_outbox(status, next_try);
"""


@dataclass(frozen=True)
class Instance:
    """One received instance (its bytes live under ``NodeState.file_path(sha256)``)."""

    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str
    sha256: str


class NodeState:
    """Node bookkeeping on top of a :class:`ich.web.store.Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        store.add_schema(SCHEMA)
        self.dicom_dir = store.root / "dicom"
        self.outputs_dir = store.root / "outputs"

    def file_path(self, sha256: str) -> str:
        """Where received bytes with this SHA-256 are kept (two-level fan-out)."""
        return str(self.dicom_dir / sha256[:2] / f"{sha256}.dcm")

    # -- associations ---------------------------------------------------------------------
    def open_association(self, calling_aet: str) -> str:
        """Record an accepted association; return its id."""
        aid = uuid.uuid4().hex
        with self.store.tx() as db:
            db.execute("INSERT INTO node_associations VALUES (?,?,?,NULL,'open')",
                       (aid, calling_aet, time.time()))
        return aid

    def end_association(self, aid: str, status: str) -> None:
        """Mark an association ``released``, ``aborted`` or ``closed`` (connection closed
        without either; treated as aborted) — an open one only, except that a release also
        replaces ``closed``.

        Why: pynetdicom reports the closed connection from its socket thread and the release
        from the association thread; when the sender hangs up right after the A-RELEASE
        response (storescu does), the close can be recorded first, and the study of a
        complete, released association would then wait for a retry that never comes.
        """
        allowed = ("open", "closed") if status == "released" else ("open",)
        with self.store.tx() as db:
            db.execute(f"UPDATE node_associations SET status=?, ended=? WHERE id=? AND "
                       f"status IN ({', '.join('?' * len(allowed))})",
                       (status, time.time(), aid, *allowed))

    def recover(self) -> tuple[int, int]:
        """After a restart: open associations died with the process (aborted: their studies
        wait for the sender's retry) and interrupted triage is redone. Returns both counts."""
        now = time.time()
        with self.store.tx() as db:
            a = db.execute("UPDATE node_associations SET status='aborted', ended=? "
                           "WHERE status='open'", (now,)).rowcount
            t = db.execute("UPDATE node_studies SET status='receiving' WHERE status='triaging'"
                           ).rowcount
            db.execute("UPDATE node_outbox SET status='pending' WHERE status='sending'")
        return int(a), int(t)

    # -- instances ------------------------------------------------------------------------
    def add_instance(self, inst: Instance, aid: str, calling_aet: str) -> None:
        """Record a received instance; a re-sent SOP Instance UID supersedes the earlier copy,
        and any arrival (re)opens its study for triage."""
        now = time.time()
        with self.store.tx() as db:
            db.execute("INSERT OR REPLACE INTO node_instances VALUES (?,?,?,?,?,?,?)",
                       (inst.sop_instance_uid, inst.study_instance_uid,
                        inst.series_instance_uid, inst.sop_class_uid, inst.sha256, aid, now))
            db.execute(
                "INSERT INTO node_studies (study_instance_uid, calling_aet, last_received, "
                "last_assoc, status, updated) VALUES (?,?,?,?,'receiving',?) "
                "ON CONFLICT(study_instance_uid) DO UPDATE SET calling_aet=excluded.calling_aet,"
                " last_received=excluded.last_received, last_assoc=excluded.last_assoc, "
                "updated=excluded.updated, status=CASE WHEN status='triaging' THEN 'triaging' "
                "ELSE 'receiving' END, attempts=0",
                (inst.study_instance_uid, calling_aet, now, aid, now))

    def instances(self, study_instance_uid: str) -> list[Instance]:
        """Every current instance of a study."""
        rows = self.store.query(
            "SELECT sop_instance_uid, study_instance_uid, series_instance_uid, sop_class_uid, "
            "sha256 FROM node_instances WHERE study_instance_uid=? ORDER BY received",
            (study_instance_uid,))
        return [Instance(*tuple(r)) for r in rows]

    # -- stability ------------------------------------------------------------------------
    def ready_studies(self, stable_seconds: float, now: float | None = None) -> list[str]:
        """Studies whose last instance came ``stable_seconds`` ago and whose last association
        was released that long ago (an open or aborted one keeps the study waiting)."""
        now = time.time() if now is None else now
        rows = self.store.query(
            "SELECT s.study_instance_uid AS uid FROM node_studies s JOIN node_associations a "
            "ON a.id = s.last_assoc WHERE s.status='receiving' AND a.status='released' AND "
            "MAX(s.last_received, a.ended) <= ? AND s.attempts < 3 ORDER BY s.last_received",
            (now - stable_seconds,))
        return [str(r["uid"]) for r in rows]

    def start_triage(self, study_instance_uid: str) -> float | None:
        """Claim a study for triage; return its mark (last arrival seen) or None if taken."""
        with self.store.tx() as db:
            row = db.execute("SELECT last_received FROM node_studies WHERE study_instance_uid=? "
                             "AND status='receiving'", (study_instance_uid,)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE node_studies SET status='triaging', triage_mark=?, updated=? "
                       "WHERE study_instance_uid=?", (row[0], time.time(), study_instance_uid))
            return float(row[0])

    def study_row(self, study_instance_uid: str) -> dict[str, object] | None:
        """The node's row of a study, or None."""
        rows = self.store.query("SELECT * FROM node_studies WHERE study_instance_uid=?",
                                (study_instance_uid,))
        return dict(rows[0]) if rows else None

    def fail_triage(self, study_instance_uid: str, error: str) -> None:
        """Record a failed triage: retried (up to 3 attempts) unless it keeps failing."""
        with self.store.tx() as db:
            db.execute("UPDATE node_studies SET status=CASE WHEN attempts+1 >= 3 THEN 'failed' "
                       "ELSE 'receiving' END, attempts=attempts+1, error=?, updated=? "
                       "WHERE study_instance_uid=?", (error, time.time(), study_instance_uid))
