"""Keep freed heap memory in the process while the phantom renders (glibc only).

Rendering a 512 px slice allocates and frees dozens of 1 MB temporaries. glibc returns the top
of the heap to the kernel as soon as a few MB lie free there and maps it again on the next
allocation, so every slice page-faulted its working set back in: about 550 faults per slice,
a fifth of the generator's CPU time spent in the kernel. A larger "top pad" (glibc's
``M_TOP_PAD``) keeps that memory mapped from slice to slice. The setting is process-wide: the
generator raises it for the duration of a cohort and puts glibc's default back afterwards
(worker processes, which end with the cohort, keep it). Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

#: mallopt parameter number of M_TOP_PAD (glibc malloc.h) and glibc's default value.
_M_TOP_PAD = -2
_DEFAULT_TOP_PAD = 128 * 1024
#: Room for the temporaries of a 512 px slice, with plenty to spare.
TOP_PAD = 64 * 1024 * 1024


def _mallopt() -> Callable[[int, int], int] | None:
    """glibc's ``mallopt``, or None where there is none (macOS, Windows, musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        func = libc.mallopt
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_int]
    func.restype = ctypes.c_int
    return func


def hold_freed_memory(top_pad: int = TOP_PAD) -> bool:
    """Let glibc keep up to ``top_pad`` bytes of freed heap mapped, from now on.

    For worker processes (a ``ProcessPoolExecutor`` initializer). Returns whether it applied.
    """
    mallopt = _mallopt()
    return mallopt is not None and mallopt(_M_TOP_PAD, top_pad) == 1


@contextmanager
def keep_freed_memory(top_pad: int = TOP_PAD) -> Iterator[None]:
    """Within the block, let glibc keep up to ``top_pad`` bytes of freed heap mapped."""
    if not hold_freed_memory(top_pad):
        yield
        return
    try:
        yield
    finally:
        hold_freed_memory(_DEFAULT_TOP_PAD)
