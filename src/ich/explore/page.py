"""The exploration page (``OUT/index.html``): tables and figures from :class:`ExploreData`.

Sections follow the order of questions on new data: how many files and which failed, how the
studies are organised, which header variants must the reader handle, what the HU values look
like, what the labels are, and how each subtype looks in each window.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd

from ich import __version__
from ich.atomic import atomic_write_text
from ich.data.catalog import duplicate_positions
from ich.dicom.io import transfer_syntax_name
from ich.dicom.series import IPP_COLUMNS, order_catalog
from ich.dicom.windowing import WINDOWS
from ich.eval.html import (
    RESEARCH_BANNER,
    Raw,
    banner,
    cards,
    esc,
    figure,
    page,
    table,
)
from ich.explore.figures import (
    fig_cooccurrence,
    fig_hu_histogram,
    fig_image_grid,
    fig_label_counts,
    fig_slices_per_series,
)
from ich.explore.result import ExploreData, ExploreSummary
from ich.explore.scan import HU_EDGES
from ich.labels import LABELS

#: Rows shown in a header-variant table before the rest is summed into "other".
TOP_VALUES = 12
#: Failed files listed by name (all are in headers.csv).
MAX_FAILED_LISTED = 50


def _ts_name(uid: str) -> str:
    """Transfer syntax UID with its name, e.g. "1.2.840.10008.1.2 (Implicit VR Little Endian)"."""
    name = transfer_syntax_name(uid)
    return f"{uid} ({name})" if uid and name != uid else (uid or "(none)")


def _counts(series: pd.Series, title: str) -> Raw:
    """A value-count table, largest first, long tails folded into one "other" row."""
    vc = series.astype(str).value_counts()
    rows: list[list[object]] = [[k, int(v)] for k, v in vc.head(TOP_VALUES).items()]
    if len(vc) > TOP_VALUES:
        rows.append([f"other ({len(vc) - TOP_VALUES} values)", int(vc.iloc[TOP_VALUES:].sum())])
    return Raw(f"<div><h3>{esc(title)}</h3>{table(['value', 'files'], rows)}</div>")


def _header_section(ok: pd.DataFrame) -> list[str]:
    """Header variants the reader must handle, as counts tables."""
    if ok.empty:
        return ["<h2>Header variants</h2><p class='muted'>No readable files.</p>"]
    bits = (
        "allocated "
        + ok["bits_allocated"].astype(str)
        + " / stored "
        + ok["bits_stored"].astype(str)
        + " / "
        + ok["pixel_representation"].map({0: "unsigned", 1: "signed"}).fillna("?")
    )
    size = ok["rows"].astype(str) + " × " + ok["columns"].astype(str)
    multi = ok["window_multivalued"].map({True: "multi-valued", False: "single value"})
    tables = [
        _counts(bits, "Bits and pixel representation"),
        _counts(ok["rescale_intercept"].map(lambda v: f"{v:g}"), "Rescale intercept"),
        _counts(ok["rescale_slope"].map(lambda v: f"{v:g}"), "Rescale slope"),
        _counts(size, "Image size (rows × columns)"),
        _counts(ok["transfer_syntax_uid"].map(_ts_name), "Transfer syntax"),
        _counts(ok["photometric_interpretation"], "Photometric interpretation"),
        _counts(multi.fillna("absent"), "Window Center string"),
        _counts(ok["modality"].replace("", "(empty)"), "Modality"),
        _counts(
            ok["wrap_fault"].map({True: "yes (fixed on read)", False: "no"}),
            "RSNA 12-bit wrap fault",
        ),
    ]
    return [
        "<h2>Header variants</h2>",
        "<p class='muted'>Counts over readable files. The reader handles each variant; "
        "unusual values deserve a look at the image grids.</p>",
        "<div class='grid3'>" + "".join(tables) + "</div>",
    ]


def _failure_section(data: ExploreData, s: ExploreSummary) -> list[str]:
    h = data.headers
    out = ["<h2>Files and failures</h2>"]
    if s.n_failed == 0 and not data.pixel_failures:
        out.append(f"<p>All {s.n_files:,} files were read.</p>")
        return out
    failed = h[h["status"] != "ok"]
    if len(failed):
        rows = [[reason, n] for reason, n in s.failures.items()]
        out.append(table(["reason (header read)", "files"], rows))
        listed = [[Path(p).name, e] for p, e in zip(failed["path"], failed["error"], strict=True)][
            :MAX_FAILED_LISTED
        ]
        out.append(
            table(
                ["file", "reason"],
                listed,
                caption=f"{len(failed):,} unreadable files (all in headers.csv).",
            )
        )
    if data.pixel_failures:
        rows = [[Path(p).name, e] for p, e in data.pixel_failures[:MAX_FAILED_LISTED]]
        out.append(
            table(
                ["file", "reason (pixel data)"],
                rows,
                caption="Files whose header reads but whose pixel data do not "
                "(found among the sampled slices only).",
            )
        )
    return out


def _series_section(ok: pd.DataFrame, out: Path) -> list[str]:
    if ok.empty:
        return []
    per_series = ok.groupby("series_instance_uid").size().to_numpy()
    fig = fig_slices_per_series(per_series, out / "slices_per_series.png")
    per_study = ok.groupby("study_instance_uid")["series_instance_uid"].nunique()
    per_patient = ok.groupby("patient_id")["study_instance_uid"].nunique()
    rows = [
        ["slices per series", per_series.min(), np.median(per_series), per_series.max()],
        ["series per study", per_study.min(), per_study.median(), per_study.max()],
        ["studies per patient", per_patient.min(), per_patient.median(), per_patient.max()],
    ]
    shown = [[r[0], *[Raw(f"{float(v):g}") for v in r[1:]]] for r in rows]
    res = ["<h2>Patients, studies, series</h2>", table(["", "min", "median", "max"], shown)]
    sop = ok["sop_instance_uid"].astype(str)
    dup = int(sop[sop != ""].duplicated(keep=False).sum())
    if dup:
        res.append(
            banner(
                f"{dup:,} files share their SOP Instance UID with another file "
                "(duplicates: counted twice in series sizes).",
                "info",
            )
        )
    dups = _duplicate_positions(ok)
    if len(dups):
        examples = ", ".join(f"{r.series_instance_uid} ({r.duplicates}, e.g. {r.example})"
                             for r in dups.head(5).itertuples())
        res.append(
            banner(
                f"{int(dups['duplicates'].sum()):,} slice(s) in {len(dups):,} series sit at the "
                f"same position as another slice of their series: {examples}"
                f"{' ...' if len(dups) > 5 else ''}. Such series were often exported twice "
                "or hold two reconstructions; ich keeps both slices in order.",
                "warn",
            )
        )
    res.append(figure(fig.name, "Number of slices in each series", cls="wide"))
    return res


def _duplicate_positions(ok: pd.DataFrame) -> pd.DataFrame:
    """Series with two slices at one position along the normal (``duplicate_positions``)."""
    if not set(IPP_COLUMNS) <= set(ok.columns):
        return pd.DataFrame(columns=["series_instance_uid", "duplicates", "example"])
    frame = ok.assign(status="ok")
    for col in ("study_instance_uid", "series_instance_uid"):
        frame[col] = frame[col].astype(str)
    return duplicate_positions(order_catalog(frame))


def _label_section(data: ExploreData, ok: pd.DataFrame, out: Path) -> list[str]:
    if data.labels is None:
        return ["<h2>Labels</h2><p class='muted'>No label CSV given (use --labels).</p>"]
    names = [str(c) for c in data.labels.columns]
    lab = ok.dropna(subset=names[:1])
    res = [
        "<h2>Labels</h2>",
        f"<p>{esc(data.labels_path)}: {len(data.labels):,} images labelled, "
        f"{len(lab):,} of them among the readable files here; "
        f"{int(ok[names[0]].isna().sum()):,} readable files without labels.</p>",
    ]
    if lab.empty:
        return res
    y = lab[names].to_numpy(dtype=np.int64)
    counts = {name: int(y[:, j].sum()) for j, name in enumerate(names)}
    rows = [[name, counts[name], f"{100 * counts[name] / len(y):.2f}%"] for name in names]
    f1 = fig_label_counts(counts, len(y), out / "label_counts.png")
    f2 = fig_cooccurrence(y.T @ y, names, out / "label_cooccurrence.png")
    res += [
        table(["label", "positive slices", "share"], rows),
        "<div class='grid2'>",
        figure(f1.name, "Positive slices per label"),
        figure(f2.name, "Co-occurrence of labels on the same slice"),
        "</div>",
    ]
    return res


def _grid_section(data: ExploreData, out: Path) -> list[str]:
    if not data.examples:
        return []
    labelled = "negative" in data.examples
    res = [
        "<h2>Image grids</h2>",
        "<p class='muted'>"
        + (
            "Up to 6 slices per label (and negatives), "
            if labelled
            else "Sampled slices (no labels), "
        )
        + "picked deterministically by a hash of the image id, shown in four windows.</p>",
    ]
    for name in ("brain", "subdural", "soft_tissue", "bone"):
        f = fig_image_grid(data.examples, WINDOWS[name], out / f"grid_{name}.png")
        res.append(figure(f.name, f"{name.replace('_', ' ')} window"))
    return res


def write_page(data: ExploreData, s: ExploreSummary, out: Path) -> Path:
    """Write the figures and ``out/index.html``; returns the HTML path."""
    h = data.headers
    ok = h[h["status"] == "ok"]
    if data.labels is not None and len(ok):
        ok = ok.join(data.labels.astype(float), on="image_id")
    else:
        ok = ok.assign(**{label: np.nan for label in LABELS})
    body: list[str] = [banner(RESEARCH_BANNER, "warn")]
    body.append(
        cards(
            [
                ("files", s.n_files),
                ("readable", s.n_ok),
                ("failed", s.n_failed),
                ("patients", s.n_patients),
                ("studies", s.n_studies),
                ("series", s.n_series),
                ("labelled slices", s.n_labelled),
            ]
        )
    )
    body += [banner(n, "info") for n in data.notes]
    body += _failure_section(data, s)
    body += _series_section(ok, out)
    body += _header_section(ok)
    body.append("<h2>Hounsfield units</h2>")
    if data.n_hist:
        f = fig_hu_histogram(HU_EDGES, data.hu_hist, data.n_hist, out / "hu_histogram.png")
        body.append(figure(f.name, "HU histogram of sampled slices (log scale)", cls="wide"))
    else:
        body.append("<p class='muted'>No slice could be read for the histogram.</p>")
    body += _label_section(data, ok, out)
    body += _grid_section(data, out)
    cmd = (
        f"ich explore {data.dicom_dir}"
        + (f" --labels {data.labels_path}" if data.labels_path else "")
        + f" --out {out}"
    )
    body += ["<h2>Reproduce</h2>", Raw(f"<pre><code>{esc(cmd)}</code></pre>")]
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = page(
        "ich — data exploration",
        f"{data.dicom_dir} · {stamp} · ich {__version__}",
        body,
        footer=f"{RESEARCH_BANNER}. Per-file headers in headers.csv.",
    )
    return atomic_write_text(out / "index.html", text)
