"""Study-level bootstrap intervals: the vectorised ``ich.eval.bootstrap`` against a plain loop.

The baseline is what one would write first: for each replicate, draw studies with replacement,
gather their rows and call ``sklearn.metrics.roc_auc_score`` (plus sensitivity/specificity) per
label. Both run side by side on the same synthetic predictions (studies of ``--slices`` slices,
six labels); CPU seconds are reported (``time.process_time``), so a busy shared machine skews
the ratio less than wall time. The baseline runs fewer replicates and is scaled per replicate.

    python benchmarks/bench_bootstrap.py --studies 300 --slices 30 --json bootstrap.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from ich.eval.bootstrap import bootstrap_intervals
from ich.labels import LABELS


def _data(studies: int, slices: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(studies), slices)
    y = (rng.random((studies, 6)) < 0.3)[groups] & (rng.random((groups.size, 6)) < 0.5)
    y[:, 0] = y[:, 1:].any(axis=1)
    p = np.clip(0.35 * y + 0.65 * rng.random(y.shape), 0, 1)
    return y.astype(float), p, groups


def _naive(y: np.ndarray, p: np.ndarray, groups: np.ndarray, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    ids = np.unique(groups)
    rows_of = {g: np.flatnonzero(groups == g) for g in ids}
    for _ in range(n):
        rows = np.concatenate([rows_of[g] for g in rng.choice(ids, ids.size)])
        t, q = y[rows], p[rows]
        for j in range(t.shape[1]):
            if 0 < t[:, j].sum() < len(t):
                roc_auc_score(t[:, j], q[:, j])
            pred = q[:, j] >= 0.5
            _ = (pred & (t[:, j] == 1)).sum(), (~pred & (t[:, j] == 0)).sum()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--studies", type=int, default=300)
    ap.add_argument("--slices", type=int, default=30)
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--baseline-resamples", type=int, default=100)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    y, p, groups = _data(args.studies, args.slices)
    start = time.process_time()
    bootstrap_intervals(y, p, groups, LABELS, n_resamples=args.resamples)
    fast = (time.process_time() - start) / args.resamples
    start = time.process_time()
    _naive(y, p, groups, args.baseline_resamples, seed=0)
    naive = (time.process_time() - start) / args.baseline_resamples
    out = {
        "rows": len(y), "studies": args.studies, "resamples": args.resamples,
        "cpu_s_vectorised": fast * args.resamples, "cpu_s_loop_scaled": naive * args.resamples,
        "us_per_row_replicate": 1e6 * fast / len(y), "speedup": naive / fast,
    }
    print(f"{len(y):,} rows in {args.studies:,} studies, {args.resamples} replicates: "
          f"vectorised {out['cpu_s_vectorised']:.2f} s CPU, loop {out['cpu_s_loop_scaled']:.2f} s "
          f"CPU (scaled from {args.baseline_resamples}), {out['speedup']:.1f}x; "
          f"{out['us_per_row_replicate']:.3f} µs per row × replicate")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
