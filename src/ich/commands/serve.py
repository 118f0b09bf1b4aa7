"""``ich serve``: the triage web application (FastAPI + uvicorn)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ich.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction, name: str, help_text: str) -> None:
    """Register ``ich serve`` and its options."""
    p = sub.add_parser(
        name, help=help_text,
        description="Serve the browser viewer and JSON API (docs at /docs). Binds 127.0.0.1 by "
        "default; any other host needs a token. Research use only — not for diagnosis.",
    )
    p.add_argument("--model", type=Path, action="append", metavar="RUN",
                   help="trained run folder (repeat to average several runs)")
    p.add_argument("--data", type=Path, default=None, metavar="DIR",
                   help="where studies, results and the database live "
                   "(default: $XDG_DATA_HOME/ich or ~/.local/share/ich)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument("--token", default=None,
                   help="access token required on every request (default: $ICH_TOKEN)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="another name the browser may use for this server (Host header "
                   "allow-list against DNS rebinding; repeat for several)")
    p.add_argument("--ssl-certfile", type=Path, default=None, metavar="PEM",
                   help="serve HTTPS with this certificate (needs --ssl-keyfile)")
    p.add_argument("--ssl-keyfile", type=Path, default=None, metavar="PEM",
                   help="private key of --ssl-certfile")
    p.add_argument("--device", default="cpu", help="torch device for the model (default cpu)")
    p.add_argument("--max-upload-mb", type=int, default=2048, help="largest upload in MiB")
    p.add_argument("--max-files", type=int, default=5000, help="most files per upload")
    dicom = p.add_argument_group("DICOM node in the same process (see `ich node`)")
    dicom.add_argument("--dicom-port", type=int, default=None, metavar="N",
                       help="also run the DICOM node on this port (same data and model)")
    dicom.add_argument("--dicom-host", default="127.0.0.1",
                       help="interface of the DICOM node (default 127.0.0.1)")
    from ich.commands.node import add_listening_options

    add_listening_options(dicom, "--dicom-aet")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build WebSettings from the options and serve until interrupted."""
    from ich.web.app import serve
    from ich.web.settings import WebSettings, default_data_dir

    model = args.model[0] if args.model and len(args.model) == 1 else args.model
    settings = WebSettings(
        data_dir=args.data or default_data_dir(), host=args.host, port=args.port,
        token=args.token or os.environ.get("ICH_TOKEN") or None, model_dir=model,
        device=args.device, max_upload_bytes=args.max_upload_mb * 2**20, max_files=args.max_files,
        allowed_hosts=list(args.allowed_host), ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
    )
    if args.max_upload_mb <= 0:
        raise ConfigError("--max-upload-mb must be positive")
    if args.dicom_port is None:
        serve(settings)
        return 0
    return _serve_with_node(args, settings)


def _serve_with_node(args: argparse.Namespace, settings: object) -> int:
    """The web app and the DICOM node in one process: one store, one model, one job queue."""
    import logging

    import uvicorn

    from ich.commands.node import node_settings
    from ich.net.node import Node
    from ich.web.app import create_app, quiet_patient_data_logs

    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_patient_data_logs()
    for name in ("pynetdicom", "highdicom"):
        logging.getLogger(name).setLevel(logging.WARNING)
    app = create_app(settings)  # type: ignore[arg-type]
    state = app.state.ich
    args.host, port = args.dicom_host, args.dicom_port
    node_cfg = node_settings(args, state.settings.data_dir)
    node_cfg.port = port
    node = Node(node_cfg, store=state.store, get_predictor=state.get_predictor,
                wake_worker=lambda: state.worker.wake() if state.worker else None,
                model_lock=state.model_lock)
    node.start()
    print(f"ich: serving on http://{state.settings.host}:{state.settings.port}/ and DICOM "
          f"{node_cfg.aet}@{node_cfg.host}:{node.port} (data in {state.settings.data_dir}; "
          "research use only — not for diagnosis)", flush=True)
    try:
        uvicorn.run(app, host=state.settings.host, port=state.settings.port, log_level="info",
                    access_log=False)
    finally:
        node.stop()
    return 0
