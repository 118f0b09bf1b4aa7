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
    serve(settings)
    return 0
