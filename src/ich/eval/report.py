"""The evaluation report: one self-contained HTML page a person reads first.

Order of the page follows the questions a reader asks: may I use this (banners)? is it better
than guessing the base rate (headline)? for which subtypes and how safely at a triage operating
point (per-label tables)? what do the curves look like? how was it trained, and how do I
reproduce it?

Every table and figure follows the labels in ``metrics.json`` (the run's own label set): a
one-label run gets one row per table and one curve per plot.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import yaml

from ich import __version__
from ich.atomic import atomic_write_text
from ich.eval.bootstrap import format_interval
from ich.eval.html import (
    PHANTOM_BANNER,
    RESEARCH_BANNER,
    Raw,
    banner,
    cards,
    esc,
    figure,
    fmt,
    page,
    table,
)
from ich.eval.recipe import recipe_rows_from_text
from ich.labels import LABELS, label_weights
from ich.runs.foldset import is_fold_set

_TITLES = {
    "base_rate": "Base rate (constant)",
    "slice_model": "Slice model (CNN)",
    "sequence_model": "Sequence model",
}
_PHANTOM_WORDS = ("phantom", "synthetic")


def _mentions_phantom(obj: Any) -> bool:
    """Whether a config/provenance value says the data are synthetic.

    Boolean keys named like ``phantom: true`` count by their value; any string value that
    names the phantom or synthetic data counts as a mention.
    """
    if isinstance(obj, dict):
        for key, value in obj.items():
            if isinstance(value, bool) and any(w in str(key).lower() for w in _PHANTOM_WORDS):
                if value:
                    return True
            elif _mentions_phantom(value):
                return True
        return False
    if isinstance(obj, (list, tuple)):
        return any(_mentions_phantom(v) for v in obj)
    return isinstance(obj, str) and any(w in obj.lower() for w in _PHANTOM_WORDS)


def _cache_mentions_phantom(cfg: Any) -> bool:
    """Whether the training cache named in the config (``data.cache``) came from a phantom."""
    data = cfg.get("data") if isinstance(cfg, dict) else None
    cache = data.get("cache") if isinstance(data, dict) else None
    if not cache:
        return False
    path = Path(str(cache)) / "cache.json"
    try:
        return _mentions_phantom(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return False


def read_run_context(run_dir: Path) -> dict[str, Any]:
    """Config text, provenance text and the phantom flag of a run; absent files are tolerated."""
    ctx: dict[str, Any] = {"config_text": None, "provenance": None, "phantom": False}
    cfg_path = run_dir / "config.yaml"
    if cfg_path.is_file():
        text = cfg_path.read_text(encoding="utf-8", errors="replace")
        ctx["config_text"] = text
        try:
            cfg = yaml.safe_load(text)
        except yaml.YAMLError:
            cfg = text
        ctx["phantom"] = _mentions_phantom(cfg) or _cache_mentions_phantom(cfg)
    prov_path = run_dir / "provenance.json"
    if prov_path.is_file():
        try:
            prov = json.loads(prov_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            prov = None
        if isinstance(prov, dict):
            parts = [str(prov[k]) for k in ("provenance", "training_data", "note") if prov.get(k)]
            ctx["provenance"] = "; ".join(parts) or json.dumps(prov)
            ctx["phantom"] = ctx["phantom"] or _mentions_phantom(prov)
    return ctx


def _labels(metrics: dict[str, Any]) -> list[str]:
    """The evaluated labels (older metrics.json files without them held the six)."""
    return list(metrics.get("labels") or LABELS)


def _auc_name(metrics: dict[str, Any]) -> str:
    """How the headline AUC is named: ``AUC any``, ``AUC hemorrhage``, ``mean AUC``."""
    main = metrics.get("headline_label", "any")
    return "mean AUC" if main == "mean" else f"AUC {main}"


def _headline_auc(h: dict[str, Any]) -> Any:
    return h.get("auc", h.get("auc_any"))  # "auc" is absent from older metrics.json files


def _wll_caption(labels: list[str]) -> str:
    """What the weighted log loss weighs, for this run's labels."""
    ratio = "A ratio below 1 means the model beats guessing the prevalence."
    if len(labels) == 1:
        return f"wll = log loss of the run's one label, {labels[0]} (lower is better). {ratio}"
    how = "any ×2" if "any" in labels else "labels weighed equally"
    weights = label_weights(labels)
    names = ", ".join(f"{n} {w:g}" for n, w in zip(labels, weights, strict=True))
    return f"wll = RSNA weighted log loss (lower is better; {how}: {names}). {ratio}"


def _headline_table(metrics: dict[str, Any]) -> Raw:
    head = metrics["headline"]
    auc = _auc_name(metrics)
    rows = []
    for name in ("base_rate", *metrics["models"]):
        s, t = head["slice"].get(name, {}), head["study"].get(name, {})
        rows.append(
            [
                _TITLES.get(name, name),
                s.get("weighted_log_loss"),
                s.get("ratio_to_base_rate"),
                _headline_auc(s),
                t.get("weighted_log_loss"),
                t.get("ratio_to_base_rate"),
                _headline_auc(t),
            ]
        )
    return table(
        [
            "Model",
            "Slice wll",
            "÷ base rate",
            f"Slice {auc}",
            "Study wll",
            "÷ base rate",
            f"Study {auc}",
        ],
        rows,
        caption=_wll_caption(_labels(metrics)),
    )


def _with_ci(value: Any, lm: dict[str, Any], key: str) -> Any:
    """``"0.93 (0.88–0.97)"`` where the label has a bootstrap interval for ``key``, else the
    plain value (formatted by the table like every other number)."""
    ci = lm.get("ci95", {}).get(key)
    if value is None or not ci or ci.get("low") is None:
        return value
    return Raw(format_interval({**ci, "estimate": value}))  # digits and dashes: nothing to escape


def _label_table(m: dict[str, Any], labels: list[str]) -> Raw:
    rows = []
    for label in labels:
        lm = m["labels"][label]
        at, hi = lm["at_threshold"], lm["at_95_sensitivity"]
        rows.append(
            [
                label,
                lm["n_positive"],
                lm["log_loss"],
                _with_ci(lm["auc"], lm, "auc"),
                lm["ap"],
                _with_ci(at.get("sensitivity"), lm, "sensitivity"),
                _with_ci(at.get("specificity"), lm, "specificity"),
                hi.get("threshold"),
                hi.get("sensitivity"),
                hi.get("specificity"),
                lm["ece"],
            ]
        )
    thr = fmt(m["threshold"], 2)
    return table(
        [
            "Label",
            "Positives",
            "Log loss",
            "ROC AUC",
            "Avg. precision",
            f"Sens @ {thr}",
            f"Spec @ {thr}",
            "Thr. @ 95% sens",
            "Sens @ that thr.",
            "Spec @ that thr.",
            "ECE",
        ],
        rows,
        caption=_ci_caption(m),
    )


def _ci_caption(m: dict[str, Any]) -> str | None:
    """Says what the bracketed intervals are, or why there are none."""
    boot = m.get("bootstrap")
    if not boot:
        return None
    if "skipped" in boot:
        return f"No bootstrap intervals here: {boot['skipped']}."
    return (f"(…–…): {boot['confidence']:.0%} bootstrap interval, {boot['n_resamples']:,} "
            f"resamples of the {boot['n_groups']:,} studies (all slices of a drawn study kept; "
            f"seed {boot['seed']}).")


def _figures(metrics: dict[str, Any], level: str, name: str) -> list[str]:
    """ROC and PR side by side, then reliability and confusion side by side."""
    figs = metrics["figures"]
    what = f"{_TITLES[name]}, {level} level"
    caps = {
        "roc": f"ROC curves — {what}",
        "pr": f"Precision-recall curves — {what}",
        "reliability": f"Reliability diagram (10 bins; marker area ~ rows) — {what}",
        "confusion": f"Confusion matrices at threshold {metrics['threshold']:g} — {what}",
    }
    shown = [
        figure(figs[f"{k}/{level}/{name}"], cap)
        for k, cap in caps.items()
        if f"{k}/{level}/{name}" in figs
    ]
    return [
        f"<div class='grid2'>{''.join(shown[i : i + 2])}</div>" for i in range(0, len(shown), 2)
    ]


def _level_section(metrics: dict[str, Any], level: str) -> list[str]:
    n = metrics["n_slices"] if level == "slice" else metrics["n_studies"]
    unit = "slices" if level == "slice" else f"studies (max over slices, by {metrics['study_key']})"
    out = [f"<h2>{esc(level.capitalize())} level</h2>", f"<p class='muted'>{n:,} {esc(unit)}.</p>"]
    scores = metrics["levels"][level]
    for name in metrics["models"]:
        out.append(f"<h3>{esc(_TITLES[name])}</h3>")
        out.append(_label_table(scores[name], _labels(metrics)))
        notes = [
            f"{lab}: {scores[name]['labels'][lab]['note']}"
            for lab in _labels(metrics)
            if scores[name]["labels"][lab]["note"]
        ]
        if notes:
            out.append(f"<p class='muted'>{esc('; '.join(notes))}.</p>")
        out += _figures(metrics, level, name)
    return out


def _reproduce(run_dir: Path, metrics: dict[str, Any], config_text: str | None) -> Raw:
    """Commands that retrain with the saved config and re-run this evaluation."""
    run = str(run_dir)
    again = f"ich evaluate {run} --threshold {metrics['threshold']:g}"
    if metrics.get("data"):
        again += f" --data {metrics['data']}" + (" --allow-overlap" if metrics.get(
            "overlap", {}).get("n_patients") else "")
    cmds = [again]
    if config_text is not None:
        try:
            cfg = yaml.safe_load(config_text)
            cache = cfg["data"]["cache"] if isinstance(cfg, dict) else None
        except (yaml.YAMLError, KeyError, TypeError):
            cache = None
        folds = " --all-folds" if is_fold_set(run_dir) else ""  # k runs + OOF sequence models
        cmds.insert(0, f"ich train {cache or 'CACHE'} --out NEW_RUN --config {run}/config.yaml"
                       f"{folds}")
    return Raw("<pre><code>" + esc("\n".join(cmds)) + "</code></pre>")


def _folds_section(metrics: dict[str, Any]) -> list[str]:
    """A fold set's per-fold slice scores, with the spread over folds."""
    folds = metrics.get("folds") or []
    if not folds:
        return []
    models = [m for m in metrics["models"] if m in folds[0]]
    main = metrics.get("headline_label", "any")
    rows = [[f"fold {f['fold']}", f["n_slices"], f["n_patients"] or "",
             *[Raw(f"{f[m]['weighted_log_loss']:.4f}") for m in models],
             *[Raw("n/a" if f[m]["auc"] is None else f"{f[m]['auc']:.3f}") for m in models]]
            for f in folds]
    spread = []
    for m in models:
        wll = [f[m]["weighted_log_loss"] for f in folds]
        spread.append(f"{_TITLES.get(m, m)}: weighted log loss {min(wll):.4f}-{max(wll):.4f}")
    head = ["fold", "slices", "patients", *[f"wll {_TITLES.get(m, m)}" for m in models],
            *[f"AUC {main} {_TITLES.get(m, m)}" for m in models]]
    return ["<h2>Per fold</h2>",
            f"<p>Slice level, each fold scored by the models that did not train on it. "
            f"Spread over folds: {esc('; '.join(spread))}.</p>",
            table(head, rows)]


def _headline_section(metrics: dict[str, Any]) -> list[str]:
    """Cards with the final model's numbers, the model-vs-baseline table and its provenance."""
    body: list[str] = []
    best = metrics["models"][-1] if metrics["models"] else "base_rate"
    hs, ht = metrics["headline"]["slice"][best], metrics["headline"]["study"][best]
    auc = _auc_name(metrics)
    body.append(
        cards(
            [
                (f"slice wll — {_TITLES[best]}", hs["weighted_log_loss"]),
                ("÷ base rate (slice)", hs["ratio_to_base_rate"]),
                (f"{auc} (slice)", _headline_auc(hs)),
                (f"{auc} (study)", _headline_auc(ht)),
                ("slices / studies", f"{metrics['n_slices']:,} / {metrics['n_studies']:,}"),
            ]
        )
    )
    body += ["<h2>Headline</h2>", _headline_table(metrics)]
    body.append(f"<p class='muted'>Labels of this run: {esc(', '.join(_labels(metrics)))}.</p>")
    src = metrics["baseline_source"]
    body.append(
        f"<p class='muted'>Base-rate prevalence from: slice level — {esc(src['slice'])}; "
        f"study level — {esc(src['study'])}. Predictions: {esc(metrics['source'])}"
        + (
            f"; {metrics['n_unlabelled_slices_skipped']:,} unlabelled slices skipped"
            if metrics["n_unlabelled_slices_skipped"]
            else ""
        )
        + ".</p>"
    )
    return body


def _training_section(metrics: dict[str, Any], ctx: dict[str, Any]) -> list[str]:
    """Training curves, training-data provenance and the resolved configuration."""
    body: list[str] = []
    body.append("<h2>Training</h2>")
    if "training_curves" in metrics["figures"]:
        body.append(
            figure(metrics["figures"]["training_curves"], "Training loss and validation wll")
        )
    else:
        body.append("<p class='muted'>No training log (metrics.jsonl) in this run folder.</p>")
    if ctx["provenance"]:
        body.append(f"<p><b>Training data:</b> {esc(ctx['provenance'])}</p>")
    recipe = recipe_rows_from_text(ctx["config_text"])
    if recipe:
        body.append(table(["Recipe", "Setting"], recipe, caption="Training recipe"))
    body.append("<h3>Configuration</h3>")
    body.append(
        Raw("<pre><code>" + esc(ctx["config_text"] or "(no config.yaml)") + "</code></pre>")
    )
    return body


def _overlap_banner(metrics: dict[str, Any]) -> str | None:
    """A warning on top when the evaluated patients include training patients."""
    ov = metrics.get("overlap")
    if not ov:
        return None
    if not ov.get("known"):
        return banner("The run folder does not list its training rows (no folds.csv): whether "
                      "these patients were in the training set is unknown.", "info")
    if not ov.get("n_patients") and not ov.get("n_images"):
        return None
    return banner(f"{ov['n_patients']:,} of {ov['n_eval_patients']:,} evaluated patients "
                  f"({ov['n_images']:,} of {ov['n_eval_images']:,} images) were in this run's "
                  "training set (evaluated with --allow-overlap): these numbers overstate how "
                  "the model does on new patients.", "warn")


def write_report(run_dir: Path, metrics: dict[str, Any], out_dir: Path | None = None) -> Path:
    """Write ``OUT/report.html`` from the dict :func:`ich.eval.evaluate.evaluate_run` builds.

    Args:
        run_dir: The run folder (configuration, provenance).
        metrics: The metrics dict.
        out_dir: Where the report goes (default ``run_dir``); its PNGs are in ``OUT/report/``.

    Returns:
        The path of the HTML file.
    """
    run_dir = Path(run_dir)
    ctx = read_run_context(run_dir)
    body: list[str] = [banner(RESEARCH_BANNER, "warn")]
    if ctx["phantom"]:
        body.append(banner(PHANTOM_BANNER, "info"))
    if (warn := _overlap_banner(metrics)) is not None:
        body.append(warn)
    body += _headline_section(metrics)
    if not metrics["models"]:
        body.append(banner("No model predictions found: only the baseline is shown.", "info"))
    for level in ("slice", "study"):
        body += _level_section(metrics, level)
    body += _folds_section(metrics)
    body += _training_section(metrics, ctx)
    body += ["<h2>Reproduce</h2>", _reproduce(run_dir, metrics, ctx["config_text"])]
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    html_text = page(
        "ich — evaluation report",
        f"Run {run_dir.name} · {stamp} · ich {__version__}",
        body,
        footer=f"{RESEARCH_BANNER}. Generated by ich {__version__}. Metrics in metrics.json.",
    )
    return atomic_write_text((out_dir or run_dir) / "report.html", html_text)
