"""The one ``ich`` command. Subcommands are thin: each lives in ``ich.commands.<name>`` with
``add_parser(subparsers)`` (registers its options and sets ``func``) and calls library code.

Command modules are imported only when their name is on the command line, so ``ich info`` does
not pay for importing torch.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib import import_module

from ich import __version__
from ich.errors import IchError

#: Subcommand name -> (module in ich.commands, one-line help).
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "synthesize a phantom cohort, train, evaluate, predict and serve, in one go"),
    "info": ("info", "print the key metadata of DICOM files"),
    "synth": ("synth", "write a synthetic (phantom) head-CT cohort in the Kaggle layout"),
    "explore": ("explore", "HTML report on a DICOM folder: labels, headers, HU, image grids"),
    "prepare": ("prepare", "build the preprocessing cache (catalog + HU arrays) from DICOM"),
    "train": ("train", "train the slice CNN and the study sequence model"),
    "evaluate": ("evaluate", "metrics, plots and an HTML report for a trained run"),
    "predict": ("predict", "write a Kaggle submission from one or more runs"),
    "serve": ("serve", "serve the triage web application"),
    "export": ("export", "export a run's slice CNN to ONNX or TorchScript (parity-checked)"),
    "node": ("node", "DICOM node: receive CT studies, triage them, send SR + key images back"),
    "pull": ("pull", "fetch a study from a PACS (C-GET) and triage it"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; only the subcommand named by ``only`` is imported and given its options."""
    parser = argparse.ArgumentParser(
        prog="ich",
        description="Acute intracranial hemorrhage detection on head CT (research use only).",
    )
    parser.add_argument("--version", action="version", version=f"ich {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        if name != only:
            sub.add_parser(name, help=help_text)
            continue
        import_module(f"ich.commands.{module}").add_parser(sub, name, help_text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ich`` console script."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in args_list if a in COMMANDS), None)
    parser = build_parser(only=chosen)
    args = parser.parse_args(args_list)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2 if args_list else 0
    try:
        return int(args.func(args) or 0)
    except IchError as exc:
        print(f"ich {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"ich {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the last net: a user sees one line, a developer asks for more
        if os.environ.get("ICH_DEBUG"):
            raise
        print(f"ich {args.command}: error: {_describe(exc)} (set ICH_DEBUG=1 to see the "
              "traceback)", file=sys.stderr)
        return 1


def _describe(exc: BaseException) -> str:
    """One line for an error ich did not name: its kind, and what the OS or library said."""
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror or exc}"
    text = " ".join(str(exc).split()) or "no message"
    return f"{type(exc).__name__}: {text[:500]}"


if __name__ == "__main__":
    raise SystemExit(main())
