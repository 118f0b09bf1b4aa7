"""Small, dependency-free HTML helpers shared by the evaluation and exploration reports.

Reports must open from a plain folder on any machine (offline hospital workstations included),
so pages carry their own CSS, no JavaScript, no web fonts, and images are PNG files beside the
HTML. Everything a user or a file supplies is escaped here, in one place.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Any

RESEARCH_BANNER = "Research use only — not for diagnosis"
PHANTOM_BANNER = "Model trained on synthetic phantom data: for demonstration and testing only"

CSS = """
:root { --ink:#1d2733; --muted:#5b6b7c; --line:#d9e0e7; --bg:#f6f8fa; --accent:#1f5f99; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
       sans-serif; color:var(--ink); background:#fff; }
main { max-width:1180px; margin:0 auto; padding:24px 32px 64px; }
h1 { font-size:26px; margin:8px 0 4px; }
h2 { font-size:19px; margin:36px 0 10px; padding-bottom:4px; border-bottom:2px solid var(--line); }
h3 { font-size:16px; margin:22px 0 8px; }
p.sub { color:var(--muted); margin:0 0 16px; }
.banner { padding:10px 14px; border-radius:6px; margin:8px 0; font-weight:600; }
.banner.warn { background:#fdecea; border:1px solid #f5b7b1; color:#8a1c12; }
.banner.info { background:#fff6e0; border:1px solid #f3d58a; color:#6b4a00; }
.cards { display:flex; flex-wrap:wrap; gap:12px; margin:12px 0; }
.card { border:1px solid var(--line); border-radius:8px; padding:10px 16px; min-width:118px;
        background:var(--bg); }
.card .v { font-size:22px; font-weight:700; }
.card .k { color:var(--muted); font-size:13px; }
table { border-collapse:collapse; margin:8px 0 16px; font-size:14px; }
th, td { border:1px solid var(--line); padding:5px 10px; text-align:right; }
th { background:var(--bg); font-weight:600; }
td:first-child, th:first-child, td.t, th.t { text-align:left; }
tr:nth-child(even) td { background:#fbfcfd; }
td.best { font-weight:700; color:var(--accent); }
caption { caption-side:bottom; text-align:left; font-size:13px; padding-top:4px; }
.grid3 { display:grid; grid-template-columns:1fr 1fr 1fr; gap:12px; }
figure.wide img { max-width:860px; }
figure { margin:12px 0 20px; }
figure img { max-width:100%; border:1px solid var(--line); border-radius:4px; }
figcaption { color:var(--muted); font-size:13px; margin-top:4px; }
.grid2 { display:grid; grid-template-columns:1fr 1fr; gap:16px; }
pre { background:var(--bg); border:1px solid var(--line); padding:10px; overflow:auto;
      font-size:13px; }
code { font-family:SFMono-Regular, Menlo, Consolas, monospace; }
.muted { color:var(--muted); }
footer { margin-top:48px; color:var(--muted); font-size:13px; }
"""


class Raw(str):
    """A string that is already HTML (produced by these helpers); it is not escaped again."""


def esc(value: Any) -> str:
    """Escape any value for HTML text or attributes; :class:`Raw` passes through."""
    if isinstance(value, Raw):
        return str(value)
    return html.escape(str(value), quote=True)


def fmt(value: Any, digits: int = 4) -> str:
    """Numbers for tables: None/NaN read "n/a" rather than a misleading 0."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:  # NaN
            return "n/a"
        return f"{value:.{digits}f}"
    return str(value)


def _is_text(cell: Any) -> bool:
    return isinstance(cell, str) and not isinstance(cell, Raw)


def table(headers: Sequence[Any], rows: Iterable[Sequence[Any]], caption: str | None = None) -> Raw:
    """An HTML table; cells are escaped unless they are :class:`Raw`, numbers go through fmt.

    Text cells (and their column headers, judged on the first row) are left-aligned and
    numbers right-aligned, so columns of figures line up on their digits.
    """
    rows = [list(r) for r in rows]
    first = rows[0] if rows else []
    head = "".join(
        f"<th class='t'>{esc(h)}</th>"
        if (i < len(first) and _is_text(first[i])) or not first
        else f"<th>{esc(h)}</th>"
        for i, h in enumerate(headers)
    )
    body = []
    for row in rows:
        cells = "".join(
            f"<td class='t'>{esc(c)}</td>" if _is_text(c) else f"<td>{esc(fmt(c))}</td>"
            for c in row
        )
        body.append(f"<tr>{cells}</tr>")
    cap = f"<caption class='muted'>{esc(caption)}</caption>" if caption else ""
    return Raw(f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def figure(src: str, caption: str, alt: str | None = None, cls: str = "") -> Raw:
    """An image (path relative to the page) with a caption."""
    return Raw(
        f"<figure class='{esc(cls)}'><img src='{esc(src)}' alt='{esc(alt or caption)}'>"
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def cards(items: Sequence[tuple[str, Any]]) -> Raw:
    """Headline numbers as a row of cards: (label, value)."""
    inner = "".join(
        f"<div class='card'><div class='v'>{esc(fmt(v) if not isinstance(v, str) else v)}</div>"
        f"<div class='k'>{esc(k)}</div></div>"
        for k, v in items
    )
    return Raw(f"<div class='cards'>{inner}</div>")


def banner(text: str, kind: str = "warn") -> Raw:
    """A prominent notice (``warn`` red, ``info`` amber)."""
    return Raw(f"<div class='banner {esc(kind)}' role='note'>{esc(text)}</div>")


def page(title: str, subtitle: str, body: Sequence[str], footer: str = "") -> str:
    """A complete, self-contained HTML document (inline CSS, no scripts, no external fetches)."""
    parts = "\n".join(str(b) for b in body)
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>"
        f"<h1>{esc(title)}</h1><p class='sub'>{esc(subtitle)}</p>\n{parts}\n"
        f"<footer>{esc(footer)}</footer></main></body></html>\n"
    )
