"""``ich export RUN --format onnx|torchscript --out FILE``: the slice CNN as a standalone file."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction, name: str, help_text: str) -> None:
    """Register ``ich export``."""
    p = sub.add_parser(
        name,
        help=help_text,
        description=(
            "Export a run's slice CNN (windowed slices -> embeddings and logits) to ONNX or "
            "TorchScript, compare it with PyTorch on test batches (refused above the "
            "tolerance), and write FILE.json beside it describing the expected input."
        ),
    )
    p.add_argument("run", type=Path, metavar="RUN", help="run folder from `ich train`")
    p.add_argument("--format", choices=("onnx", "torchscript"), required=True)
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="file to write")
    p.add_argument("--tolerance", type=float, default=1e-3,
                   help="largest |export - PyTorch| accepted (default 1e-3)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export, check, report."""
    from ich.errors import IchError
    from ich.export import export_run

    if not args.run.is_dir():
        raise IchError(f"{args.run}: run folder not found")
    if args.format == "onnx":
        from ich.onnx_engine import onnx_available

        if not onnx_available():
            raise IchError("--format onnx needs onnxruntime: pip install 'ich-detect[onnx]'")
    result = export_run(args.run, args.out, args.format, args.tolerance)
    print(f"exported: {result.path} ({args.format}); largest difference from PyTorch "
          f"{result.max_abs_diff:.2e}; input description: {result.meta_path}")
    return 0
