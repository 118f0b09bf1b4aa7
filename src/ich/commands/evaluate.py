"""``ich evaluate RUN [--data CACHE] [--threshold T]``: metrics.json, plots and report.html."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(sub: argparse._SubParsersAction, name: str, help_text: str) -> None:
    """Register ``ich evaluate`` and its options."""
    p = sub.add_parser(
        name,
        help=help_text,
        description=(
            "Score a trained run (slice and sequence model, slice and study level, against the "
            "base-rate predictor) and write RUN/metrics.json, RUN/report/*.png and "
            "RUN/report.html. Without --data the run's out-of-fold predictions are scored; "
            "with --data the run's models predict the labelled cache first."
        ),
    )
    p.add_argument("run", type=Path, help="run folder written by `ich train`")
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        metavar="CACHE",
        help="labelled cache (from `ich prepare --labels`) to predict and score",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="decision threshold for sensitivity/specificity (default 0.5)",
    )
    p.add_argument("--tta", type=int, default=1, help="test-time augmentations with --data")
    p.add_argument("--fidelity", type=Path, default=None, metavar="PHANTOM",
                   help="also score the heatmaps against this phantom cohort's lesion masks")
    p.add_argument("--fidelity-slices", type=int, default=20, metavar="N",
                   help="most slices per label scored with --fidelity (default 20)")
    p.set_defaults(func=run)


def _print_headline(result: dict[str, Any]) -> None:
    head = result["headline"]
    print(
        f"Evaluated {result['n_slices']:,} slices in {result['n_studies']:,} studies "
        f"(threshold {result['threshold']:g})."
    )
    print(
        f"{'model':<16} {'slice wll':>10} {'÷ base':>8} {'AUC any':>8} "
        f"{'study wll':>10} {'÷ base':>8} {'AUC any':>8}"
    )
    for name in ("base_rate", *result["models"]):
        s, t = head["slice"][name], head["study"][name]
        cells = [
            s["weighted_log_loss"],
            s["ratio_to_base_rate"],
            s["auc_any"],
            t["weighted_log_loss"],
            t["ratio_to_base_rate"],
            t["auc_any"],
        ]
        text = ["n/a" if v is None else f"{v:.4f}" for v in cells]
        print(
            f"{name:<16} {text[0]:>10} {text[1]:>8} {text[2]:>8} "
            f"{text[3]:>10} {text[4]:>8} {text[5]:>8}"
        )


def run(args: argparse.Namespace) -> int:
    """Convert the options, predict when asked, evaluate, print the headline and paths."""
    from ich.eval.evaluate import evaluate_run

    run_dir: Path = args.run
    predictions = None
    if args.data is not None:
        from ich.predict import predict_cache

        predictions = predict_cache([run_dir], Path(args.data), tta=int(args.tta))
    source = None if args.data is None else f"{args.data} predicted by this run (tta {args.tta})"
    result = evaluate_run(
        run_dir, predictions=predictions, threshold=float(args.threshold), source=source
    )
    _print_headline(result)
    if getattr(args, "fidelity", None) is not None:  # ich.eval.fidelity: heatmaps vs masks
        from ich.eval.fidelity import add_to_report

        for r in add_to_report(run_dir, args.fidelity, max_slices=args.fidelity_slices):
            print(f"fidelity {r.label:<16} energy in mask {r.energy_in_mask:.3f} (baseline "
                  f"{r.energy_in_mask_baseline:.3f}), pointing {r.pointing_hit_rate:.2f} "
                  f"(baseline {r.pointing_hit_rate_baseline:.2f}), {r.empty_maps} empty maps")
    print(f"metrics: {run_dir / 'metrics.json'}")
    print(f"report:  {result['report']}")
    return 0
