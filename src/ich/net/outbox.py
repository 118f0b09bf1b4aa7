"""The persistent outbox: every result object × destination is a row; a sender thread delivers
them with exponential backoff, across restarts, and records each attempt.

Why rows before sending: the rows are written in the same transaction that marks the study
triaged, so a crash never loses a result, and a destination that is down simply keeps its rows
pending until it answers. A crash after the peer stored an object but before the row was marked
sent makes it send that object once more; DICOM receivers treat the same SOP Instance UID as the
same object, so the copy replaces itself rather than doubling the results.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import defaultdict
from collections.abc import Callable, Sequence

from ich.background import BackgroundLoop
from ich.net.peers import Peer, parse_peer
from ich.net.state import NodeState

log = logging.getLogger("ich.net")

#: Backoff: 2, 4, 8, ... seconds, at most 5 minutes between tries.
BACKOFF_BASE, BACKOFF_MAX = 2.0, 300.0

Sender = Callable[[str, Sequence[str]], dict[str, str | None]]


def enqueue(db: sqlite3.Connection, study_uid: str, study_id: str,
            objects: Sequence[tuple[str, str, str]], destinations: Sequence[str]) -> int:
    """Add rows (inside the caller's transaction) for every object (sop uid, sop class, path)
    to every destination (``dimse:AET@HOST:PORT`` or ``stow:URL``); return how many."""
    now = time.time()
    rows = [(study_uid, study_id, sop, cls, path, dest, now)
            for sop, cls, path in objects for dest in destinations]
    db.executemany(
        "INSERT INTO node_outbox (study_instance_uid, study_id, sop_instance_uid, sop_class_uid,"
        " path, destination, status, attempts, next_try, created) "
        "VALUES (?,?,?,?,?,?,'pending',0,?,?)", [(*r, r[-1]) for r in rows])
    return len(rows)


def backoff(attempts: int) -> float:
    """Seconds to wait after ``attempts`` failed tries."""
    return float(min(BACKOFF_MAX, BACKOFF_BASE ** max(1, attempts)))


class Outbox(BackgroundLoop):
    """The sender thread.

    Args:
        state: The node's tables.
        own_aet: Calling AE title for C-STORE.
        senders: Optional replacements per kind (``dimse``, ``stow``), used by tests.
    """

    def __init__(self, state: NodeState, own_aet: str,
                 senders: dict[str, Sender] | None = None) -> None:
        self.state = state
        self.own_aet = own_aet
        self.senders: dict[str, Sender] = {"dimse": self._dimse, "stow": self._stow}
        self.senders.update(senders or {})
        super().__init__("ich-outbox", idle_seconds=0.5)

    def _dimse(self, target: str, paths: Sequence[str]) -> dict[str, str | None]:
        from ich.net.scu import cstore

        peer: Peer = parse_peer(target)
        return cstore(peer, self.own_aet, paths)

    def _stow(self, target: str, paths: Sequence[str]) -> dict[str, str | None]:
        from ich.net.scu import stow

        return stow(target, paths)

    def step(self) -> bool:
        try:
            return self.send_due() > 0
        except Exception:  # a bug must not stop deliveries for good
            log.exception("outbox pass failed")
            return False

    def send_due(self, now: float | None = None) -> int:
        """Try every pending row that is due, one batch per destination; return how many."""
        now = time.time() if now is None else now
        store = self.state.store
        rows = store.query("SELECT id, path, destination, attempts FROM node_outbox WHERE "
                           "status='pending' AND next_try <= ? ORDER BY id LIMIT 200", (now,))
        by_dest: dict[str, list[tuple[int, str, int]]] = defaultdict(list)
        for r in rows:
            by_dest[r["destination"]].append((int(r["id"]), str(r["path"]), int(r["attempts"])))
        for dest, items in by_dest.items():
            kind, _, target = dest.partition(":")
            with store.tx() as db:
                db.executemany("UPDATE node_outbox SET status='sending' WHERE id=?",
                               [(i,) for i, _, _ in items])
            try:
                results = self.senders[kind](target, [p for _, p, _ in items])
            except Exception as exc:
                results = {p: f"{type(exc).__name__}: {exc}" for _, p, _ in items}
            done = time.time()
            with store.tx() as db:
                for row_id, path, attempts in items:
                    error = results.get(path, "no result")
                    if error is None:
                        db.execute("UPDATE node_outbox SET status='sent', sent=?, attempts=?, "
                                   "error=NULL WHERE id=?", (done, attempts + 1, row_id))
                    else:
                        db.execute("UPDATE node_outbox SET status='pending', attempts=?, "
                                   "next_try=?, error=? WHERE id=?",
                                   (attempts + 1, done + backoff(attempts + 1), error, row_id))
            failed = sum(1 for _, p, _ in items if results.get(p, "x") is not None)
            log.info("outbox: %d object(s) to %s, %d failed", len(items), _shown(dest), failed)
        return len(rows)


def _shown(dest: str) -> str:
    """A destination for logs (URLs without any credentials)."""
    kind, _, target = dest.partition(":")
    if "@" in target and kind == "stow":
        target = target.split("//", 1)[0] + "//" + target.rsplit("@", 1)[-1]
    return f"{kind} {target}"
