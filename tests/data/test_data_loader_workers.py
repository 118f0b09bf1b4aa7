"""Loader processes are capped at the machine's cores (the recipe asks for 4)."""

from __future__ import annotations

import os

from ich.data.loader import loader_workers


def test_loader_workers_never_exceed_the_cores() -> None:
    cores = os.cpu_count() or 1
    assert loader_workers(0) == 0
    assert loader_workers(1) == 1
    assert loader_workers(cores + 3) == cores
    assert loader_workers(-1) == 0
