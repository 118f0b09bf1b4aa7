"""The running DICOM node: Storage SCP + stable-study scheduler + outbox (+ its own prediction
worker when it runs without ``ich serve``), on one data folder.

Threads: pynetdicom's (one per association, short handlers), ``ich-node`` (finds stable studies
and triages them one after another: the model uses every core anyway), ``ich-outbox`` (sends),
and ``ich-worker`` (the web app's job runner) when no web app shares the process.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ich.errors import ConfigError
from ich.net.outbox import Outbox
from ich.net.peers import Peer, check_aet
from ich.net.scp import StoreHandlers, add_storage_contexts
from ich.net.selection import SelectionRules
from ich.net.state import NodeState
from ich.net.triage import Services, TriageConfig, triage_study
from ich.web.predictor import PredictorLike
from ich.web.store import Store

log = logging.getLogger("ich.net")

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass
class NodeSettings:
    """Everything ``ich node`` is told.

    Attributes:
        data_dir: The shared data folder (``ich serve --data``).
        host, port, aet: Where the SCP listens and its AE title.
        destinations: C-STORE peers for the results.
        stow: STOW-RS base URLs (e.g. ``http://pacs:8042/dicom-web``).
        stable_seconds: Quiet time after which a study counts as complete.
        allow_aet: Calling AE titles accepted (required when binding beyond loopback).
        rules: Series selection rules.
        threshold: Operating threshold for present/absent of every label; None: the run's own
            per-label thresholds (``RUN/thresholds.json``), 0.5 for a label without one.
        key_images: Secondary Capture key images per study.
        tls_cert, tls_key: PEM certificate and private key: the SCP then speaks DICOM over TLS
            only (PS3.15 B.1 secure transport).
        tls_ca: PEM CA bundle: with it, senders must present a certificate it signed.
    """

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 11112
    aet: str = "ICH"
    destinations: list[Peer] = field(default_factory=list)
    stow: list[str] = field(default_factory=list)
    stable_seconds: float = 10.0
    allow_aet: list[str] = field(default_factory=list)
    rules: SelectionRules = field(default_factory=SelectionRules)
    threshold: float | None = None
    key_images: int = 3
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None

    def ssl_context(self) -> ssl.SSLContext | None:
        """The server TLS context, or None without ``tls_cert``.

        Raises:
            ConfigError: a missing or unreadable certificate, key or CA file.
        """
        if self.tls_cert is None and self.tls_key is None:
            if self.tls_ca is not None:
                raise ConfigError("--tls-ca needs --tls-cert and --tls-key")
            return None
        if self.tls_cert is None or self.tls_key is None:
            raise ConfigError("TLS needs both --tls-cert and --tls-key")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ctx.load_cert_chain(str(self.tls_cert), str(self.tls_key))
            if self.tls_ca is not None:
                ctx.load_verify_locations(cafile=str(self.tls_ca))
                ctx.verify_mode = ssl.CERT_REQUIRED
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"TLS files {self.tls_cert}, {self.tls_key}"
                              f"{', ' + str(self.tls_ca) if self.tls_ca else ''}: {exc}") from exc
        return ctx

    def validate(self) -> None:
        """Refuse unsafe or impossible settings before binding.

        Raises:
            ConfigError: another interface without ``--allow-aet``, a bad port or AE title.
        """
        check_aet(self.aet)
        for aet in self.allow_aet:
            check_aet(aet)
        if self.host not in LOOPBACK and not self.allow_aet:
            raise ConfigError(f"listening on {self.host} lets any machine send patient data: "
                              "name the senders with --allow-aet AET")
        if not 0 <= self.port < 65536:
            raise ConfigError(f"port {self.port} is not a valid TCP port")
        if self.stable_seconds < 0 or (self.threshold is not None
                                       and not 0 < self.threshold < 1):
            raise ConfigError("--stable-seconds must be >= 0 and --threshold within (0, 1)")
        self.ssl_context()  # unreadable TLS files are refused before binding

    def triage_config(self) -> TriageConfig:
        dests = [f"dimse:{p}" for p in self.destinations] + [f"stow:{u}" for u in self.stow]
        return TriageConfig(aet=self.aet, destinations=dests, rules=self.rules,
                            threshold=self.threshold, key_images=self.key_images)


class Node:
    """Start, run and stop the node.

    Args:
        settings: What to listen on and where to send.
        store: The web store to share (``ich serve --dicom-port``); opened here when None.
        get_predictor: The model (shared with the web app); with ``predictor``, the node runs
            its own prediction worker.
        wake_worker: Wakes the shared web worker (when the web app runs it).
        model_lock: The lock that serialises model use (Grad-CAM hooks are not reentrant).
    """

    def __init__(self, settings: NodeSettings, store: Store | None = None,
                 predictor: PredictorLike | None = None,
                 get_predictor: Callable[[], PredictorLike | None] | None = None,
                 wake_worker: Callable[[], None] | None = None,
                 model_lock: threading.Lock | None = None) -> None:
        settings.validate()
        self.settings = settings
        self._own_store = store is None
        self.store = store or Store(settings.data_dir)
        self.state = NodeState(self.store)
        self.model_lock = model_lock or threading.Lock()
        self._predictor = predictor
        self.get_predictor = get_predictor or (lambda: self._predictor)
        self.worker: Any = None
        if wake_worker is None:
            from ich.web.jobs import Worker

            self.worker = Worker(self.store, self.get_predictor, self.model_lock)
            wake_worker = self.worker.wake
        self.services = Services(self.get_predictor, wake_worker, self.model_lock)
        self.config = settings.triage_config()
        self.outbox = Outbox(self.state, settings.aet)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ich-node", daemon=True)
        self._server: Any = None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return int(self._server.server_address[1]) if self._server else self.settings.port

    def start(self) -> None:
        """Recover from the last run, then listen, schedule and send."""
        from pynetdicom import AE

        aborted, redo = self.state.recover()
        if aborted or redo:
            log.info("recovered: %d association(s) cut by the last stop, %d triage(s) to redo",
                     aborted, redo)
        if self.worker is not None:
            self.worker.start()
        ae = AE(ae_title=self.settings.aet)
        add_storage_contexts(ae)
        if self.settings.allow_aet:
            ae.require_calling_aet = list(self.settings.allow_aet)
        ae.maximum_pdu_size = 0  # no limit: fewer PDUs for 0.5 MB slices
        handlers = StoreHandlers(self.state, self._wake.set)
        self._server = ae.start_server((self.settings.host, self.settings.port), block=False,
                                       evt_handlers=handlers.handlers(),
                                       ssl_context=self.settings.ssl_context())
        self._thread.start()
        self.outbox.start()
        log.info("DICOM node %s listening on %s:%d (stable after %g s; research use only)",
                 self.settings.aet, self.settings.host, self.port, self.settings.stable_seconds)

    def stop(self) -> None:
        """Stop listening, finish the current step, stop the threads."""
        if self._server is not None:
            self._server.shutdown()
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(30)
        self.outbox.stop()
        if self.worker is not None:
            self.worker.stop()
        if self._own_store:
            self.store.close()

    def run_once(self) -> int:
        """Triage every study that is stable now; return how many."""
        n = 0
        for uid in self.state.ready_studies(self.settings.stable_seconds):
            if self._stop.is_set():
                break
            if triage_study(self.state, uid, self.config, self.services):
                n += 1
                self.outbox.wake()
        return n

    def _loop(self) -> None:
        tick = max(0.05, min(0.5, self.settings.stable_seconds / 4))
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # a bug must not stop the node; the study is retried
                log.exception("scheduler pass failed")
            self._wake.wait(timeout=tick)
            self._wake.clear()


def settings_from_args(data: Path, host: str, port: int, aet: str,
                       destinations: Sequence[Peer], stow: Sequence[str],
                       stable_seconds: float, allow_aet: Sequence[str],
                       rules: Path | None, threshold: float | None, key_images: int,
                       tls_cert: Path | None = None, tls_key: Path | None = None,
                       tls_ca: Path | None = None) -> NodeSettings:
    """NodeSettings from command-line values (rules read from YAML when given)."""
    return NodeSettings(
        data_dir=data, host=host, port=port, aet=aet, destinations=list(destinations),
        stow=list(stow), stable_seconds=stable_seconds, allow_aet=list(allow_aet),
        rules=SelectionRules.from_yaml(rules) if rules else SelectionRules(),
        threshold=threshold, key_images=key_images, tls_cert=tls_cert, tls_key=tls_key,
        tls_ca=tls_ca)
