"""Worker processes of ``ich prepare``: fork when it is safe, else forkserver/spawn.

Kept apart from :mod:`ich.data.build` (which schedules the chunks) because the rules for when
a process may be forked, and what a worker sets up first, are a subject of their own.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import signal
import sys
import threading
import warnings
from typing import Any

import cv2


def _die_with_parent() -> None:
    """Ask Linux to end this worker when its parent dies (``PR_SET_PDEATHSIG``).

    Why: a build process killed hard (``kill -9``, out of memory) would otherwise leave its
    workers finishing chunks for nobody, racing the rerun that replaces them. Elsewhere a no-op.
    """
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):  # no usable libc: workers outlive it
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _init_worker() -> None:
    """Initializer of forkserver/spawn workers (fresh processes: OpenCV's pool is unused)."""
    _die_with_parent()
    cv2.setNumThreads(1)  # one process per core already; threads inside would oversubscribe


def _can_fork() -> bool:
    """Whether workers may be forked from this process as it is now.

    Why fork when possible: a forked worker starts in milliseconds, while forkserver/spawn
    workers start an interpreter and import numpy, OpenCV, pydicom and pandas, about 0.6 s of a
    core per build: a third of a 2,000-slice build on 2 cores. Forking copies every lock as it
    is, so it is done only when no other Python thread runs (none can hold one) and torch is not
    loaded (its OpenMP pool does not survive fork). The native pools that numpy (OpenBLAS),
    OpenCV (pthreads) and Arrow (jemalloc) start at import are idle then and have fork handlers.
    """
    return (
        sys.platform.startswith("linux")  # macOS system libraries are not fork-safe
        and "fork" in mp.get_all_start_methods()
        and threading.active_count() == 1
        and "torch" not in sys.modules
    )


def _fork_pool(workers: int) -> Any:
    """A pool of forked workers whose OpenCV runs on one thread.

    Why set it in this process: ``cv2.setNumThreads`` inside a forked child hangs when the
    parent had already started OpenCV's thread pool, so the setting is made here, inherited by
    the children at fork, and then restored for this process.
    """
    previous = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with warnings.catch_warnings():
            # Python >= 3.12 warns on any fork of a process with native threads; the idle
            # pools of numpy/OpenCV/Arrow are the case _can_fork accepts (see there).
            warnings.filterwarnings("ignore", "This process .* is multi-threaded",
                                    DeprecationWarning)
            return mp.get_context("fork").Pool(workers, initializer=_die_with_parent)
    finally:
        cv2.setNumThreads(previous)


def _spawn_context() -> Any:
    """Start method when forking is unsafe: forkserver starts workers from a clean process;
    spawn where it is unavailable."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    # Imported once in the server, then shared by every forked worker (saves ~1 s per worker).
    ctx.set_forkserver_preload(["ich.data.preprocess", "ich.data.catalog", "ich.data.build"])
    return ctx
