"""``ich node``: the DICOM node (Storage SCP → stable study → triage → SR + key images → send)."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path
from typing import Any


def add_sending_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``ich node``, ``ich pull`` and ``ich serve --dicom-port``."""
    from ich.net.peers import parse_peer

    p.add_argument("--destination", type=parse_peer, action="append", default=[],
                   metavar="AET@HOST:PORT", help="send results by C-STORE here (repeatable)")
    p.add_argument("--stow", action="append", default=[], metavar="URL",
                   help="send results by DICOMweb STOW-RS to this base URL (repeatable)")
    p.add_argument("--rules", type=Path, default=None, metavar="YAML",
                   help="series selection rules (default: non-contrast head CT)")
    p.add_argument("--threshold", type=float, default=None,
                   help="probability at or above which a finding is reported present, for "
                   "every label (default: the run's per-label thresholds, 0.5 where it has none)")
    p.add_argument("--key-images", type=int, default=3, help="key images per study")


def add_listening_options(p: Any, aet_flag: str) -> None:
    """SCP options (``--aet`` for ``ich node``, ``--dicom-aet`` for ``ich serve``)."""
    p.add_argument(aet_flag, default="ICH", dest="aet", help="this node's AE title (ICH)")
    p.add_argument("--stable-seconds", type=float, default=10.0,
                   help="a study is complete after this long without a new instance (10)")
    p.add_argument("--allow-aet", action="append", default=[], metavar="AET",
                   help="calling AE titles accepted (required off loopback; repeatable)")
    p.add_argument("--tls-cert", type=Path, default=None, metavar="PEM",
                   help="certificate: accept DICOM over TLS only (with --tls-key)")
    p.add_argument("--tls-key", type=Path, default=None, metavar="PEM",
                   help="private key of --tls-cert")
    p.add_argument("--tls-ca", type=Path, default=None, metavar="PEM",
                   help="CA bundle: require senders' client certificates signed by it")
    add_sending_options(p)


def add_parser(sub: argparse._SubParsersAction, name: str, help_text: str) -> None:
    """Register ``ich node`` and its options."""
    p = sub.add_parser(
        name, help=help_text,
        description="Receive head-CT studies over DICOM (C-STORE), triage each once it is "
        "complete, and send a Comprehensive 3D SR and key images back. Binds 127.0.0.1 by "
        "default; other interfaces need --allow-aet. Research use only — not for diagnosis.")
    p.add_argument("--model", type=Path, nargs="+", required=True, metavar="RUN",
                   help="trained run folder(s); several are averaged")
    p.add_argument("--data", type=Path, default=None, metavar="DIR",
                   help="data folder shared with `ich serve` (default as ich serve)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--device", default="cpu", help="torch device for the model (default cpu)")
    p.add_argument("--port", type=int, default=11112, dest="dicom_port",
                   help="DICOM port to listen on (default 11112)")
    add_listening_options(p, "--aet")
    p.set_defaults(func=run)


def node_settings(args: argparse.Namespace, data: Path) -> Any:
    """NodeSettings from parsed options."""
    from ich.net.node import settings_from_args

    return settings_from_args(data, args.host if hasattr(args, "host") else "127.0.0.1",
                              args.dicom_port, args.aet, args.destination, args.stow,
                              args.stable_seconds, args.allow_aet, args.rules, args.threshold,
                              args.key_images, getattr(args, "tls_cert", None),
                              getattr(args, "tls_key", None), getattr(args, "tls_ca", None))


def run(args: argparse.Namespace) -> int:
    """Load the model, start the node and serve until interrupted (SIGINT/SIGTERM)."""
    from ich.net.node import Node
    from ich.web.app import quiet_patient_data_logs
    from ich.web.predictor import load_predictor
    from ich.web.settings import default_data_dir

    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_patient_data_logs()
    for name in ("pynetdicom", "highdicom"):  # both log UIDs at INFO: keep them out of logs
        logging.getLogger(name).setLevel(logging.WARNING)
    settings = node_settings(args, args.data or default_data_dir())
    settings.validate()
    model = args.model[0] if len(args.model) == 1 else list(args.model)
    node = Node(settings, predictor=load_predictor(model, args.device))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    node.start()
    print(f"ich node: {settings.aet} on {settings.host}:{node.port} (data in "
          f"{settings.data_dir}; research use only — not for diagnosis)", flush=True)
    try:
        while not stop.wait(1.0):  # wake every second so SIGTERM's handler gets to run
            pass
    except KeyboardInterrupt:
        pass
    finally:
        node.stop()
    return 0
