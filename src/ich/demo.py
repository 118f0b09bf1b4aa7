"""``ich demo``: the whole pipeline on a synthetic cohort, in one command, on a laptop CPU.

synthesize phantom studies -> preprocessing cache -> slice CNN + sequence model -> evaluation
report on held-out phantom patients -> a Kaggle submission for a separate phantom test cohort
-> (optionally) the web app with those test studies loaded.

Everything it trains is trained on synthetic data: for demonstration and testing only.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from ich.atomic import atomic_write_text
from ich.errors import ConfigError
from ich.labels import LABELS

if TYPE_CHECKING:
    from ich.config import RunConfig
    from ich.eval.result import Evaluation

T = TypeVar("T")

#: Shown wherever the demo prints results.
DISCLAIMER = (
    "These models were trained on a SYNTHETIC phantom cohort: the numbers show that the "
    "pipeline works end to end, not how well it reads real head CT. Research use only, "
    "not for diagnosis."
)


@dataclass
class DemoOptions:
    """What ``ich demo`` does (every field is a command-line option)."""

    out: Path = Path("ich-demo")
    studies: int = 100
    test_studies: int = 6
    seed: int = 0
    phantom_size: int = 256
    cache_size: int = 128
    workers: int = field(default_factory=lambda: max(1, min(os.cpu_count() or 1, 4)))
    overrides: Sequence[str] = ()


@dataclass
class DemoResult:
    """Where the demo put things, and its headline numbers."""

    out: Path
    run_dir: Path
    report: Path
    submission: Path
    test_images: Path
    metrics: Evaluation
    seconds: dict[str, float]


def _step(name: str, seconds: dict[str, float], fn: Callable[[], T]) -> T:
    print(f"\n== {name} ==", flush=True)
    start = time.perf_counter()
    value = fn()
    seconds[name] = time.perf_counter() - start
    print(f"   ({seconds[name]:.1f} s)", flush=True)
    return value


def _claim_folder(out: Path, opts: DemoOptions) -> None:
    """Record the demo's settings in ``out/demo.json``; refuse a folder made with others (its
    cohort, cache and run would not match what was asked for)."""
    keys = ("studies", "test_studies", "seed", "phantom_size", "cache_size")
    settings = {k: getattr(opts, k) for k in keys}
    path = out / "demo.json"
    if path.is_file() and json.loads(path.read_text(encoding="utf-8")) != settings:
        raise ConfigError(f"{out} holds a demo made with other settings; choose another --out")
    atomic_write_text(path, json.dumps(settings, indent=2))


def _run_is_complete(run_dir: Path, cfg: RunConfig) -> bool:
    """Whether ``run_dir`` already holds a finished run of exactly this configuration."""
    from ich.config import config_to_dict, load_config

    if not (run_dir / "oof_predictions.parquet").is_file():
        return False
    return config_to_dict(load_config(run_dir / "config.yaml")) == config_to_dict(cfg)


def run_demo(opts: DemoOptions) -> DemoResult:
    """Run every stage; a rerun in the same ``opts.out`` reuses the cohort, the cache and a
    finished run of the same configuration."""
    from ich.config import load_config, packaged_config
    from ich.data.build import build_cache
    from ich.data.preprocess import PreprocessSpec
    from ich.eval.evaluate import evaluate_run
    from ich.phantom import generate_cohort
    from ich.predict import predict_to_submission
    from ich.train.runner import run_training

    out = Path(opts.out)
    cohort, test, cache = out / "cohort", out / "test-cohort", out / "cache"
    run_dir = out / "run"
    seconds: dict[str, float] = {}
    _claim_folder(out, opts)
    if not (cohort / "labels.csv").is_file():
        _step(
            "1/5 synthesize the phantom cohort",
            seconds,
            lambda: generate_cohort(
                cohort,
                studies=opts.studies,
                seed=opts.seed,
                size=opts.phantom_size,
                workers=opts.workers,
                progress=True,
            ),
        )
    _step(
        "2/5 build the preprocessing cache",
        seconds,
        lambda: build_cache(
            cohort / "images",
            cache,
            labels_csv=cohort / "labels.csv",
            spec=PreprocessSpec(size=opts.cache_size),
            workers=opts.workers,
        ),
    )
    provenance = (
        f"synthetic phantom cohort (ich synth: {opts.studies} studies, seed {opts.seed}, "
        f"{opts.phantom_size} px)"
    )
    cfg = load_config(
        packaged_config("demo"),
        [f"data.cache={cache}", f"provenance={provenance}", *opts.overrides],
    )
    if _run_is_complete(run_dir, cfg):
        print(f"\nreusing the finished run in {run_dir}")
    else:
        _step(
            "3/5 train the slice CNN and the sequence model",
            seconds,
            lambda: run_training(cfg, cache, run_dir),
        )
    metrics = _step(
        "4/5 evaluate on held-out phantom patients", seconds, lambda: evaluate_run(run_dir)
    )
    if not (test / "labels.csv").is_file():
        generate_cohort(
            test,
            studies=opts.test_studies,
            seed=opts.seed + 1000,
            size=opts.phantom_size,
            workers=opts.workers,
        )
    submission = out / "submission.csv"
    _step(
        "5/5 predict a separate phantom test cohort",
        seconds,
        lambda: predict_to_submission(
            [run_dir],
            test / "images",
            submission,
            workers=opts.workers,
            cache_dir=out / "test-cache",
        ),
    )
    return DemoResult(
        out, run_dir, run_dir / "report.html", submission, test / "images", metrics, seconds
    )


def format_result(result: DemoResult) -> str:
    """The closing summary a person reads in the terminal."""
    head = result.metrics.headline["slice"]
    lines = ["", "== ich demo: results on held-out phantom patients (slice level) =="]
    lines.append(f"{'model':<16}{'weighted log loss':>20}{'vs base rate':>14}{'AUC any':>10}")
    for name in ("base_rate", "slice_model", "sequence_model"):
        if name in head:
            row = head[name]
            lines.append(
                f"{name:<16}{row.weighted_log_loss:>20.4f}"
                f"{row.ratio_to_base_rate:>13.0%}{row.auc_any:>10.3f}"
            )
    seq = result.metrics.levels["slice"].get("sequence_model") or {}
    per = seq.get("labels", {})
    if per:
        lines.append(f"\n{'sequence model':<18}{'log loss':>10}{'ROC AUC':>10}{'positives':>11}")
        for lab in LABELS:
            row = per.get(lab, {})
            auc = "n/a" if row.get("auc") is None else f"{row['auc']:.3f}"
            lines.append(
                f"{lab:<18}{row.get('log_loss', float('nan')):>10.4f}{auc:>10}"
                f"{row.get('n_positive', 0):>11.0f}"
            )
    total = sum(result.seconds.values())
    lines += [
        "",
        f"report:      {result.report}",
        f"metrics:     {result.run_dir / 'metrics.json'}",
        f"run:         {result.run_dir}  (checkpoints, config.yaml, metrics.jsonl)",
        f"submission:  {result.submission}",
        f"time:        {total:.0f} s ("
        + ", ".join(f"{k.split(' ', 1)[0]} {v:.0f} s" for k, v in result.seconds.items())
        + ")",
        "",
        DISCLAIMER,
    ]
    return "\n".join(lines)
