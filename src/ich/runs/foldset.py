"""Reading fold sets (``ich train --all-folds``): which runs a fold set folder holds.

A fold set is one model made of k fold runs; its folds are averaged inside it. Training fold
sets is :mod:`ich.train.foldset`; this module only reads them, for serving and prediction.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from ich.errors import CheckpointError

FOLDSET_FILE = "foldset.json"
FOLDSET_FORMAT = "ich-foldset/1"


def is_fold_set(path: str | Path) -> bool:
    """Whether ``path`` is a fold set folder (it holds ``foldset.json``)."""
    return (Path(path) / FOLDSET_FILE).is_file()


def fold_runs(path: str | Path) -> list[Path]:
    """The run folders of a fold set, in fold order."""
    root = Path(path)
    try:
        info = json.loads((root / FOLDSET_FILE).read_text())
        runs = [root / name for name in info["runs"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{root / FOLDSET_FILE}: unreadable fold set ({exc})") from exc
    return runs


def expand_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Run folders, with each fold set replaced by its fold runs (flat list, fold order)."""
    out: list[Path] = []
    for path in paths:
        out += fold_runs(path) if is_fold_set(path) else [Path(path)]
    return out
