"""A background thread that repeats one pass of work, sleeping while there is none.

The web app's job worker and the DICOM node's outbox both run this way: a pass when woken (new
work was queued) or every few seconds (retries come due), until stopped.
"""

from __future__ import annotations

import threading


class BackgroundLoop:
    """Calls :meth:`step` on a daemon thread until :meth:`stop`.

    After a pass that found nothing to do it waits ``idle_seconds`` or until :meth:`wake`.

    Args:
        name: The thread's name (shows in stack dumps and logs).
        idle_seconds: The longest wait between passes when idle.
    """

    def __init__(self, name: str, idle_seconds: float) -> None:
        self.idle_seconds = idle_seconds
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def step(self) -> bool:
        """One pass of work; True when it did some (the next pass then starts at once)."""
        raise NotImplementedError

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def wake(self) -> None:
        """Tell the loop there is new work."""
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the loop to stop after the current pass and wait for it."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self.step():
                self._wake.wait(timeout=self.idle_seconds)
                self._wake.clear()
