"""``ich evaluate RUN [--data CACHE [--out DIR] [--allow-overlap]]``: metrics, plots, report.

Without ``--data`` the run's out-of-fold predictions are scored and the report is the run's
own (``RUN/metrics.json``, ``RUN/report.html``). With ``--data`` the outputs go to ``--out``
(default a new folder ``RUN/evaluations/<cache name>[-N]``), never over that report, and a
cache that shares patients or images with the run's training set is refused unless
``--allow-overlap`` is given (then the overlap is printed, recorded and shown in the report).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ich.errors import ConfigError, DataOverlapError
from ich.eval.result import Evaluation


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
    p.add_argument("--tta", type=int, default=1, choices=(1, 2, 4, 8),
                   help="test-time augmentation views with --data (see `ich predict --help`)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="output folder (default: RUN itself without --data; with --data a new folder "
        "RUN/evaluations/<cache name>, never the run's out-of-fold report)",
    )
    p.add_argument(
        "--allow-overlap",
        action="store_true",
        help="score --data even when it shares patients or images with the run's training "
        "set (a warning is printed and the report says so)",
    )
    p.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        metavar="N",
        help="replicates of the 95%% bootstrap intervals, resampling studies (0: none; "
        "default 1000)",
    )
    p.add_argument("--fidelity", type=Path, default=None, metavar="PHANTOM",
                   help="also score the heatmaps against this phantom cohort's lesion masks")
    p.add_argument("--fidelity-slices", type=int, default=20, metavar="N",
                   help="most slices per label scored with --fidelity (default 20)")
    p.set_defaults(func=run)


def _print_headline(result: Evaluation) -> None:
    head = result.headline
    print(
        f"Evaluated {result.n_slices:,} slices in {result.n_studies:,} studies "
        f"(threshold {result.threshold:g}; labels {', '.join(result.labels)})."
    )
    main = result.headline_label
    auc = "mean AUC" if main == "mean" else f"AUC {main}"
    width = max(8, len(auc))
    print(
        f"{'model':<16} {'slice wll':>10} {'÷ base':>8} {auc:>{width}} "
        f"{'study wll':>10} {'÷ base':>8} {auc:>{width}}"
    )
    for name in ("base_rate", *result.models):
        s, t = head["slice"][name], head["study"][name]
        cells = [
            s.weighted_log_loss,
            s.ratio_to_base_rate,
            s.auc,
            t.weighted_log_loss,
            t.ratio_to_base_rate,
            t.auc,
        ]
        text = ["n/a" if v is None else f"{v:.4f}" for v in cells]
        print(
            f"{name:<16} {text[0]:>10} {text[1]:>8} {text[2]:>{width}} "
            f"{text[3]:>10} {text[4]:>8} {text[5]:>{width}}"
        )


def new_folder(parent: Path, name: str) -> Path:
    """``parent/name``, or ``parent/name-2``, ``-3``, ... : the first that does not exist."""
    out, k = parent / name, 1
    while out.exists():
        k += 1
        out = parent / f"{name}-{k}"
    return out


def _out_dir(run_dir: Path, data: Path | None, out: Path | None) -> Path:
    """Where this evaluation writes; refuses to replace the run's out-of-fold report."""
    if data is None:
        return run_dir if out is None else out
    if out is None:
        return new_folder(run_dir / "evaluations", data.resolve().name or "data")
    if out.resolve() == run_dir.resolve():
        raise ConfigError(
            f"--out {out}: this is the run folder, whose metrics.json and report.html are the "
            "run's out-of-fold report; choose another folder")
    return out


def _catalog_ids(cache: Path) -> Any:
    """image_id/patient_id of a cache's readable slices, or None when there is no catalog."""
    import pandas as pd

    path = cache / "catalog.parquet"
    if not path.is_file():
        return None
    try:
        cat = pd.read_parquet(path, columns=["image_id", "patient_id", "status"])
    except (OSError, ValueError, KeyError):
        return None
    return cat[cat["status"] == "ok"]


def check_cache_labels(run_dir: Path, data: Path) -> None:
    """Refuse a cache that lacks one of the run's labels, before anything is predicted.

    Why here: the metrics compare each of the run's outputs with the cache's truth of the same
    name; a cache made with another label file (e.g. the six RSNA labels for a one-label
    ``hemorrhage`` run) has nothing to compare with. ``ich predict`` still predicts such a
    cache (without truth columns).

    Raises:
        LabelsError: naming the cache, its labels and the missing ones.
    """
    from ich.data.cache import read_cache_json
    from ich.errors import LabelsError
    from ich.labels import LABELS
    from ich.runs.load import run_labels

    wanted = run_labels(run_dir)
    if wanted is None or not (data / "cache.json").is_file():
        return  # no model to predict with / not a cache: the prediction step says so
    # Caches made before label sets were free hold the six RSNA labels.
    have = tuple(read_cache_json(data).get("label_names", LABELS))
    missing = [name for name in wanted if name not in have]
    if missing:
        raise LabelsError(
            f"{data}: the cache's labels ({', '.join(have)}) lack the run's label(s) "
            f"{', '.join(missing)} (run {run_dir} predicts {', '.join(wanted)}): evaluate on a "
            "cache prepared with a label file that has them (`ich predict` still predicts "
            "this cache, without scoring)")


def _check_overlap(run_dir: Path, table: Any, allow: bool, data: Path) -> dict[str, Any]:
    """Refuse (or, with --allow-overlap, warn about) evaluation rows the run trained on."""
    from ich.eval.overlap import training_overlap

    found = training_overlap(run_dir, table)
    text = found.describe(run_dir)
    if found.found and not allow:
        raise DataOverlapError(
            f"{data}: {text}. Evaluate on patients the run never saw, or pass --allow-overlap "
            "to score them anyway (the report will say so)")
    if found.found or not found.known:
        print(f"ich evaluate: warning: {text}", file=sys.stderr)
    return found.to_dict()


def run(args: argparse.Namespace) -> int:
    """Convert the options, check overlap, predict when asked, evaluate, print the paths."""
    from ich.eval.evaluate import evaluate_run

    run_dir: Path = args.run
    data = None if args.data is None else Path(args.data)
    out_dir = _out_dir(run_dir, data, args.out)
    predictions, overlap = None, None
    if data is not None:
        from ich.predict import predict_cache

        check_cache_labels(run_dir, data)
        catalog = _catalog_ids(data)
        if catalog is not None:  # refuse before spending time on predictions
            overlap = _check_overlap(run_dir, catalog, args.allow_overlap, data)
        predictions = predict_cache([run_dir], data, tta=int(args.tta))
        if overlap is None:
            overlap = _check_overlap(run_dir, predictions, args.allow_overlap, data)
    source = None if data is None else f"{data} predicted by this run (tta {args.tta})"
    result = evaluate_run(
        run_dir, predictions=predictions, threshold=float(args.threshold), source=source,
        n_resamples=int(args.bootstrap), out_dir=out_dir, overlap=overlap, data=data,
    )
    _print_headline(result)
    if getattr(args, "fidelity", None) is not None:  # ich.eval.fidelity: heatmaps vs masks
        from ich.eval.fidelity import add_to_report, explanation_fidelity, unmapped_labels
        from ich.inference import Predictor

        predictor = Predictor.from_run(run_dir)
        skipped = unmapped_labels(predictor.labels)
        if skipped:
            print(f"fidelity: skipped label(s) {', '.join(skipped)}: the phantom has masks only "
                  "for the RSNA subtypes (and any, their union)")
        rows = explanation_fidelity(
            predictor.heatmap, args.fidelity, predictor.offsets, args.fidelity_slices,
            labels=predictor.labels,
        )
        add_to_report(rows, args.fidelity, out_dir, skipped)
        for r in rows:
            print(f"fidelity {r.label:<16} energy in mask {r.energy_in_mask:.3f} (baseline "
                  f"{r.energy_in_mask_baseline:.3f}), pointing {r.pointing_hit_rate:.2f} "
                  f"(baseline {r.pointing_hit_rate_baseline:.2f}), {r.empty_maps} empty maps")
    print(f"metrics: {out_dir / 'metrics.json'}")
    print(f"report:  {result.report}")
    return 0
