"""Score a trained run on the independent phantom (``alt_phantom.py``): does it generalise?

Generates (or reuses) an alt-phantom cohort, prepares it with ``ich prepare`` (labels included,
so this also checks that ich accepts the other generator's headers) and predicts it with
``ich predict RUN CACHE``, then prints at slice level, for the final (sequence-refined) and the
slice-CNN probabilities:

* ROC AUC per label;
* the weighted log loss (RSNA metric) beside the constant base-rate predictor, whose rates are
  the alt cohort's OWN slice prevalence (the best constant for this cohort: a strict baseline),
  and their ratio;
* study-level ROC AUC for "any" (series probabilities from ``X.series.csv``);
* the domain check: the fraction of alt series flagged outside the training domain
  (``X.series.csv`` ``in_domain``);
* where along the head the final model misses: per band of the slice's height in its series
  (0 = first slice, skull base; 1 = last, vertex), positives, how many get P(any) > 0.5, and
  AUC any within the band.

Target (issue 10, "How good"): AUC any >= 0.92 and log loss <= 0.7 x the base rate.
Models trained on a phantom are for demonstration only.

    python benchmarks/bench_altphantom.py RUN --studies 20 --seed 0 --size 256 --json alt.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

LABELS = ("any", "epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural")


def _ich(*args: str) -> None:
    """Run one ``ich`` subcommand in a fresh interpreter (the CLI as users call it)."""
    cmd = [sys.executable, "-m", "ich", *args]
    print("$ ich " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True)


def scores(frame: pd.DataFrame, prefix: str, base: dict[str, float]) -> dict[str, Any]:
    """Per-label AUC and weighted log loss of ``<prefix>_<label>`` vs the base-rate predictor."""
    from sklearn.metrics import roc_auc_score

    from ich.eval.metrics import weighted_log_loss

    y = frame[list(LABELS)].to_numpy(dtype=np.float64)
    p = frame[[f"{prefix}_{n}" for n in LABELS]].to_numpy(dtype=np.float64)
    const = np.tile([base[n] for n in LABELS], (len(y), 1))
    auc = {n: (float(roc_auc_score(y[:, j], p[:, j])) if 0 < y[:, j].sum() < len(y) else None)
           for j, n in enumerate(LABELS)}
    wll, bll = weighted_log_loss(y, p), weighted_log_loss(y, const)
    return {"auc": auc, "weighted_log_loss": wll, "base_rate_log_loss": bll,
            "ratio": wll / bll, "mean_any_negative": float(p[y[:, 0] == 0, 0].mean()),
            "mean_any_positive": float(p[y[:, 0] == 1, 0].mean()) if y[:, 0].any() else None}


#: Bands of relative height in the series (skull base 0 -> vertex 1) for :func:`by_height`.
HEIGHT_BANDS = (0.0, 0.3, 0.5, 0.7, 0.85, 1.0)


def by_height(frame: pd.DataFrame, prefix: str = "q") -> list[dict[str, Any]]:
    """Per height band: slices, positives for any, positives above P 0.5, AUC any in the band."""
    from sklearn.metrics import roc_auc_score

    last = frame.groupby("series_instance_uid")["slice_index"].transform("max").clip(lower=1)
    height = frame["slice_index"] / last
    rows = []
    for lo, hi in itertools.pairwise(HEIGHT_BANDS):
        band = frame[(height >= lo) & ((height < hi) | (hi == HEIGHT_BANDS[-1]))]
        y, p = band["any"].to_numpy(), band[f"{prefix}_any"].to_numpy()
        rows.append({"band": f"{lo:.2f}-{hi:.2f}", "slices": len(band), "positives": int(y.sum()),
                     "found": int(((y == 1) & (p > 0.5)).sum()),
                     "auc_any": float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else None})
    return rows


def study_auc(series: pd.DataFrame, frame: pd.DataFrame) -> float | None:
    """ROC AUC of the series' study-level "any" against "any slice positive"."""
    from sklearn.metrics import roc_auc_score

    truth = frame.groupby("series_instance_uid")["any"].max()
    joined = series.set_index("series_instance_uid").join(truth.rename("truth"))
    t = joined["truth"].to_numpy()
    return float(roc_auc_score(t, joined["any"])) if 0 < t.sum() < len(t) else None


def run(run_dir: Path, work: Path, studies: int, seed: int, size: int, tta: int,
        workers: int) -> dict[str, Any]:
    """Generate, prepare, predict and score; everything is kept under ``work``."""
    from alt_phantom import generate

    cohort, cache, out = work / "cohort", work / "cache", work / "predict"
    start = time.perf_counter()
    if not (cohort / "labels.csv").is_file():
        generate(cohort, studies=studies, seed=seed, size=size)
    gen_s = time.perf_counter() - start
    if not (cache / "cache.json").is_file():
        _ich("prepare", str(cohort / "images"), "--labels", str(cohort / "labels.csv"),
             "--out", str(cache), "--workers", str(workers), "--quiet")
    out.mkdir(parents=True, exist_ok=True)
    _ich("predict", str(run_dir), str(cache), "--out", str(out / "alt.csv"),
         "--predictions", str(out / "alt.parquet"), "--tta", str(tta))
    frame = pd.read_parquet(out / "alt.parquet")
    series = pd.read_csv(out / "alt.series.csv")
    prevalence = {n: float(frame[n].mean()) for n in LABELS}
    known = series["in_domain"].notna()
    flagged = (float((~series.loc[known, "in_domain"].astype(bool)).mean())
               if known.any() else None)
    return {
        "run": str(run_dir), "studies": studies, "seed": seed, "size": size, "tta": tta,
        "slices": len(frame), "series": len(series), "generate_seconds": round(gen_s, 1),
        "prevalence": prevalence,
        "study_prevalence_any": float(frame.groupby("series_instance_uid")["any"].max().mean()),
        "final": scores(frame, "q", prevalence), "slice_cnn": scores(frame, "p", prevalence),
        "study_auc_any": study_auc(series, frame), "by_height": by_height(frame),
        "flagged_out_of_domain": flagged,
        "domain_score_median": float(series["domain_score"].median()) if known.any() else None,
    }


def report(r: dict[str, Any]) -> None:
    """Print the table and the issue's target."""
    print(f"\nalt phantom: {r['studies']} studies, seed {r['seed']}, {r['size']} px, "
          f"{r['slices']} slices, {r['series']} series; run {r['run']}")
    print("slice prevalence (base rate = the alt cohort's own): "
          + ", ".join(f"{n} {v:.1%}" for n, v in r["prevalence"].items()))
    print(f"{'model':<11}{'wll':>7}{'base':>7}{'ratio':>7}"
          + "".join(f"{n[:7]:>9}" for n in LABELS))
    for key in ("final", "slice_cnn"):
        s = r[key]
        aucs = "".join(f"{'n/a' if s['auc'][n] is None else format(s['auc'][n], '.3f'):>9}"
                       for n in LABELS)
        print(f"{key:<11}{s['weighted_log_loss']:>7.3f}{s['base_rate_log_loss']:>7.3f}"
              f"{s['ratio']:>7.2f}{aucs}")
    f = r["final"]
    study = r["study_auc_any"]
    print(f"mean P(any): negative slices {f['mean_any_negative']:.3f}, positive "
          f"{f['mean_any_positive']:.3f}; study-level AUC any "
          f"{'n/a' if study is None else format(study, '.3f')}")
    print("by height in the series (0 skull base, 1 vertex): " + "; ".join(
        f"{b['band']}: {b['found']}/{b['positives']} positives found, AUC "
        f"{'n/a' if b['auc_any'] is None else format(b['auc_any'], '.2f')}"
        for b in r["by_height"]))
    flag, median = r["flagged_out_of_domain"], r["domain_score_median"]
    print(f"domain check: {'n/a' if flag is None else format(flag, '.0%')} of alt series "
          f"flagged out of domain (median score "
          f"{'n/a' if median is None else format(median, '.2f')}, threshold 1)")
    auc_any = f["auc"]["any"]
    ok = auc_any is not None and auc_any >= 0.92 and f["ratio"] <= 0.7
    print(f"target (AUC any >= 0.92 and log loss <= 0.7 x base rate): "
          f"{'met' if ok else 'NOT met'} (AUC any "
          f"{'n/a' if auc_any is None else format(auc_any, '.3f')}, ratio {f['ratio']:.2f})")


def main() -> None:
    """Parse options, run, print and optionally save JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="trained run folder (ich train / ich demo)")
    parser.add_argument("--studies", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=256, help="phantom pixels per side")
    parser.add_argument("--tta", type=int, default=1, choices=(1, 2, 4, 8))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for the cohort, cache and predictions (reused; default "
                             "a folder per studies/seed/size in the temp directory)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    work = args.work or Path(tempfile.gettempdir()) / (
        f"ich-altphantom-n{args.studies}-s{args.seed}-{args.size}")
    result = run(args.run, work, args.studies, args.seed, args.size, args.tta, args.workers)
    report(result)
    if args.json:
        from ich.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
