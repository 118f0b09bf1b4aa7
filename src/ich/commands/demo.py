"""``ich demo``: synthesize, prepare, train, evaluate, predict and serve, in one command."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction, name: str, help_text: str) -> None:
    """Register ``ich demo`` and its options."""
    from ich.demo import DemoOptions

    d = DemoOptions()
    p = sub.add_parser(
        name,
        help=help_text,
        description=(
            "The whole pipeline on a synthetic phantom cohort, on the CPU: synthesize studies, "
            "build the cache, train the slice CNN and the study sequence model, evaluate on "
            "held-out phantom patients (HTML report), write a Kaggle submission for a separate "
            "phantom test cohort, then serve the web app with those studies loaded. Models "
            "trained on phantoms are for demonstration and testing only."
        ),
    )
    p.add_argument("--out", type=Path, default=d.out, help=f"output folder (default {d.out})")
    p.add_argument("--studies", type=int, default=d.studies, help="training phantom studies")
    p.add_argument(
        "--test-studies",
        type=int,
        default=d.test_studies,
        help="phantom studies of the test cohort (submission, web app)",
    )
    p.add_argument("--seed", type=int, default=d.seed, help="random seed")
    p.add_argument("--workers", type=int, default=d.workers, help="processes")
    p.add_argument("--no-serve", action="store_true", help="stop after writing the results")
    p.add_argument("--host", default="127.0.0.1", help="web app interface (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="web app port (default 8000)")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="training config overrides, e.g. train.epochs=2",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo, print the summary, then serve unless ``--no-serve``."""
    from ich.demo import DISCLAIMER, DemoOptions, format_result, run_demo

    print(DISCLAIMER)
    opts = DemoOptions(
        out=args.out,
        studies=args.studies,
        test_studies=args.test_studies,
        seed=args.seed,
        workers=args.workers,
        overrides=list(args.overrides),
    )
    result = run_demo(opts)
    print(format_result(result))
    if args.no_serve:
        return 0
    from ich.web.app import preload, serve
    from ich.web.settings import WebSettings

    settings = WebSettings(
        data_dir=result.out / "web", host=args.host, port=args.port, model_dir=result.run_dir
    )
    preload(settings, [result.test_images])
    print(f"\nServing the viewer at http://{args.host}:{args.port}/  (Ctrl+C to stop)")
    serve(settings)
    return 0
