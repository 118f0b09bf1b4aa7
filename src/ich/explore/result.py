"""What an exploration found (:class:`ExploreData`) and its summary (:class:`ExploreSummary`).

Why its own module: the scan (:mod:`ich.explore.core`) fills these and the page
(:mod:`ich.explore.page`) reads them; with the types here neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass
class ExploreSummary:
    """What the scan found; also written to ``OUT/summary.json``."""

    out: str
    index_html: str
    n_files: int
    n_ok: int
    n_failed: int
    n_patients: int
    n_studies: int
    n_series: int
    n_labelled: int
    n_pixel_sampled: int
    n_pixel_failed: int
    failures: dict[str, int] = field(default_factory=dict)


@dataclass
class ExploreData:
    """Everything the page needs: tables, aggregates and examples (small, bounded)."""

    dicom_dir: Path
    headers: pd.DataFrame
    labels: pd.DataFrame | None
    labels_path: Path | None
    hu_hist: np.ndarray
    n_hist: int
    pixel_failures: list[tuple[str, str]]
    examples: dict[str, list[tuple[str, np.ndarray]]]
    notes: list[str] = field(default_factory=list)
