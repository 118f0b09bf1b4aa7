"""``ich pull``: fetch a study from a PACS (C-GET, or C-MOVE to a running node) and triage it."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from ich.commands.node import add_sending_options


def add_parser(sub: argparse._SubParsersAction, name: str, help_text: str) -> None:
    """Register ``ich pull`` and its options."""
    from ich.net.peers import parse_peer

    p = sub.add_parser(
        name, help=help_text,
        description="Retrieve a study already in a PACS and triage it like a received one "
        "(results go to --destination / --stow and the web worklist). With --move the PACS "
        "sends the study to a running `ich node` instead. Research use only.")
    p.add_argument("--from", dest="peer", type=parse_peer, required=True,
                   metavar="AET@HOST:PORT", help="the PACS to retrieve from")
    p.add_argument("--study", required=True, metavar="UID", help="Study Instance UID")
    p.add_argument("--model", type=Path, nargs="+", metavar="RUN",
                   help="trained run folder(s) (not needed with --move)")
    p.add_argument("--data", type=Path, default=None, metavar="DIR", help="data folder")
    p.add_argument("--aet", default="ICH", help="our AE title (ICH)")
    p.add_argument("--move", default=None, metavar="AET",
                   help="use C-MOVE to this AE title (a running ich node) instead of C-GET")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--wait", type=float, default=120.0,
                   help="seconds to wait for the results to be sent (default 120)")
    add_sending_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """C-GET the study into the data folder, triage it now, send the results, report."""
    from ich.errors import ConfigError
    from ich.net.node import Node, settings_from_args
    from ich.net.pull import c_get, c_move
    from ich.net.triage import triage_study
    from ich.web.predictor import load_predictor
    from ich.web.settings import default_data_dir

    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("pynetdicom", "highdicom", "pydicom"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if args.move:
        c_move(args.peer, args.aet, args.study, args.move)
        print(f"ich pull: {args.peer.aet} is sending the study to {args.move}")
        return 0
    if not args.model:
        raise ConfigError("--model RUN is needed to triage the pulled study (or use --move)")
    settings = settings_from_args(args.data or default_data_dir(), "127.0.0.1", 0, args.aet,
                                  args.destination, args.stow, 0.0, [], args.rules,
                                  args.threshold, args.key_images)
    model = args.model[0] if len(args.model) == 1 else list(args.model)
    node = Node(settings, predictor=load_predictor(model, args.device))
    n = c_get(node.state, args.peer, args.aet, args.study)
    node.worker.start()
    triage_study(node.state, args.study, node.config, node.services)
    row = node.state.study_row(args.study) or {}
    deadline = time.monotonic() + args.wait
    while node.config.destinations and time.monotonic() < deadline:
        node.outbox.send_due()
        left = node.store.query("SELECT COUNT(*) AS n FROM node_outbox WHERE "
                                "study_instance_uid=? AND status!='sent'", (args.study,))[0]["n"]
        if not left:
            break
        time.sleep(1.0)
    sends = node.store.query("SELECT destination, status, error FROM node_outbox WHERE "
                             "study_instance_uid=?", (args.study,))
    node.worker.stop()
    node.store.close()
    print(f"ich pull: {n} instance(s) retrieved; triage {row.get('status')}; "
          f"{sum(r['status'] == 'sent' for r in sends)}/{len(sends)} result object(s) sent"
          + (f"; error: {row.get('error')}" if row.get("error") else ""))
    return 0 if row.get("status") == "done" else 1
