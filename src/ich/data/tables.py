"""Writing tables (fold lists, prediction tables) atomically, as CSV or Parquet by suffix."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ich.atomic import atomic_path


def write_frame(df: pd.DataFrame, path: Path) -> Path:
    """Write ``df`` to ``path`` (Parquet for ``.parquet``, else CSV) without its index,
    atomically: a reader never sees half a table."""
    path = Path(path)
    with atomic_path(path, suffix=path.suffix) as tmp:
        if path.suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False)
    return path
