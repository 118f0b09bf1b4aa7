"""A bounded pool of its own for Grad-CAM, so expensive heatmaps cannot starve cheap requests.

Why: a heatmap is a forward and backward pass (tens to hundreds of ms on CPU) under the model
lock. Run as a plain sync route it would occupy one of the server's shared worker threads while
it waits for the lock, and a flood of them (a viewer scrolling with the overlay on, or a script)
would leave no thread for the worklist or slice PNGs. Here heatmap routes await a future from
one dedicated thread; identical requests in flight share one computation; past ``max_pending``
the server answers 503 at once instead of queueing without bound.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor

from ich.errors import IchError


class PoolBusyError(IchError):
    """More heatmaps are waiting than the pool accepts (HTTP 503, retry shortly)."""


class HeatmapPool:
    """One worker thread (the model is shared and locked anyway) and a bounded wait list."""

    def __init__(self, workers: int = 1, max_pending: int = 256) -> None:
        self.max_pending = max_pending
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ich-heat")
        self._lock = threading.Lock()
        self._inflight: dict[Hashable, Future[bytes]] = {}

    @property
    def pending(self) -> int:
        """Heatmaps queued or running."""
        with self._lock:
            return len(self._inflight)

    def submit(self, key: Hashable, make: Callable[[], bytes]) -> Future[bytes]:
        """The future of ``make()`` for ``key``, shared with a request for the same key.

        Raises:
            PoolBusyError: ``max_pending`` different heatmaps are already waiting.
        """
        with self._lock:
            found = self._inflight.get(key)
            if found is not None:
                return found
            if len(self._inflight) >= self.max_pending:
                raise PoolBusyError(f"{len(self._inflight)} heatmaps are already being made; "
                                    "try again in a moment")
            future = self._executor.submit(make)
            self._inflight[key] = future
        future.add_done_callback(lambda _: self._forget(key))
        return future

    async def run(self, key: Hashable, make: Callable[[], bytes]) -> bytes:
        """Await ``make()`` in the pool without holding a server thread."""
        return await asyncio.wrap_future(self.submit(key, make))

    def _forget(self, key: Hashable) -> None:
        with self._lock:
            self._inflight.pop(key, None)

    def shutdown(self) -> None:
        """Stop accepting work; running heatmaps finish."""
        self._executor.shutdown(wait=False, cancel_futures=True)
