"""What ``ich prepare`` did, as a record and as the lines it prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ich.data.catalog import duplicate_positions


@dataclass
class CacheSummary:
    """What a build did: counts, speed and failures (for the ``ich prepare`` summary)."""

    out: Path
    files: int
    ok: int
    failed: int
    chunks_built: int
    chunks_skipped: int
    chunks_total: int
    seconds: float
    finalized: bool
    failures: dict[str, int] = field(default_factory=dict)
    failure_examples: list[str] = field(default_factory=list)
    labelled: int | None = None
    label_rows_unused: int = 0
    relabelled: bool = False
    chunk_size: int = 0
    workers: int = 1
    notes: list[str] = field(default_factory=list)

    @property
    def slices_per_second(self) -> float:
        """Files processed in this run per wall-clock second (skipped chunks excluded)."""
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    processed: int = 0


def fill_counts(summary: CacheSummary, catalog: pd.DataFrame) -> None:
    """Counts, failure reasons and duplicate-position notes of a finished catalog."""
    bad = catalog[catalog["status"] != "ok"]
    summary.ok, summary.failed = len(catalog) - len(bad), len(bad)
    summary.failures = {str(k): int(v) for k, v in bad["error_kind"].value_counts().items()}
    summary.failure_examples = [f"{r.path}: {r.error}" for r in bad.head(5).itertuples()]
    dups = duplicate_positions(catalog)
    if len(dups):
        first = dups.iloc[0]
        summary.notes.append(
            f"duplicate slice positions: {int(dups['duplicates'].sum())} slice(s) in "
            f"{len(dups)} series share a position with another slice of their series, e.g. "
            f"{first['example']} (series {first['series_instance_uid']})"
        )


def format_summary(summary: CacheSummary) -> str:
    """The human summary printed by ``ich prepare``: counts, speed, location, failures."""
    s = summary
    lines = [
        f"cache: {s.out}",
        f"chunks: {s.chunks_built} built, {s.chunks_skipped} already done, {s.chunks_total} in all",
        f"processed {s.processed} files in {s.seconds:.1f} s ({s.slices_per_second:.0f} slices/s)"
        + (f", {s.workers} worker(s), {s.chunk_size} files per chunk" if s.chunk_size else ""),
    ]
    lines += [f"note: {note}" for note in s.notes]
    if s.relabelled:
        lines.append("labels replaced (--relabel): the catalog now holds the new labels")
    if s.labelled is not None:
        lines.append(f"labels: {s.labelled} of {s.files} files labelled"
                     + (f"; {s.label_rows_unused} labelled ids match no file"
                        if s.label_rows_unused else ""))
    if not s.finalized:
        lines.append("not finalized yet: other shards' chunks are missing; run the remaining "
                     "shards (or the same command without --shard) to finish the catalog")
        return "\n".join(lines)
    lines.append(f"files: {s.files} ({s.ok} ok, {s.failed} failed)")
    if s.failed:
        lines.append("failures by reason:")
        lines += [f"  {kind}: {n}" for kind, n in sorted(s.failures.items(), key=lambda kv: -kv[1])]
        lines.append("first failures:")
        lines += [f"  {example}" for example in s.failure_examples]
        lines.append("(all failures: rows with status 'error' in catalog.parquet)")
    return "\n".join(lines)
