"""Downloads a catalog model in a background thread so Slicer's GUI never blocks.

Same pattern as ``runner.CommandRunner``: ``start()``, then the GUI calls ``poll()`` from a timer until it
returns a ``DownloadResult``; ``progress()`` gives the bytes so far for a progress bar; ``cancel()`` asks the
download to stop at the next block (``ModelCache.download``'s ``should_stop``), which removes the partial
file, so a cancelled or failed download leaves nothing in the cache. No Qt here: tested without Slicer.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Optional

from .catalog import ModelEntry
from .model_cache import DownloadCancelled, ModelCache
from .runner import poll_until

__all__ = ["DownloadJob", "DownloadResult"]


@dataclass
class DownloadResult:
    checkpoints: list = field(default_factory=list)   # the verified files for --model (list[Path]) when ok
    error: str = ""                                   # for the user, when the download or its check failed
    cancelled: bool = False
    exception: Optional[BaseException] = None         # the error itself (ChecksumError, OSError, ...)

    @property
    def ok(self) -> bool:
        return not self.error and not self.cancelled


class DownloadJob:
    """One download of ``entry`` into ``cache``: ``start``, then ``poll`` until it returns a result, or ``cancel``."""

    def __init__(self, cache: ModelCache, entry: ModelEntry):
        self.cache, self.entry = cache, entry
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._done_bytes, self._total_bytes = 0, entry.size_bytes
        self._result: Optional[DownloadResult] = None
        self._thread: Optional[threading.Thread] = None

    def start(self) -> "DownloadJob":
        if self._thread is not None:
            raise RuntimeError("this download was started already; make a new job per download")
        self._thread = threading.Thread(target=self._run, name=f"download-{self.entry.id}", daemon=True)
        self._thread.start()
        return self

    def _progress(self, done: int, total: Optional[int]) -> None:
        with self._lock:
            self._done_bytes, self._total_bytes = done, total

    def _run(self) -> None:
        try:
            paths = self.cache.download(self.entry, self._progress, should_stop=self._stop.is_set)
            result = DownloadResult(checkpoints=list(paths))
        except DownloadCancelled as err:
            result = DownloadResult(cancelled=True, exception=err)
        except Exception as err:   # noqa: BLE001 - every failure goes to the user through poll()
            result = DownloadResult(error=str(err) or type(err).__name__, exception=err)
        with self._lock:
            self._result = result

    def progress(self) -> tuple:
        """``(done_bytes, total_bytes or None)`` so far."""
        with self._lock:
            return self._done_bytes, self._total_bytes

    def poll(self) -> Optional[DownloadResult]:
        """None while the download runs; its result once it ended (the thread has finished)."""
        if self._thread is None:
            raise RuntimeError("start() the download first")
        if self._thread.is_alive():
            return None
        with self._lock:
            return self._result

    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait(self, timeout: Optional[float] = None, interval: float = 0.05) -> DownloadResult:
        """Poll until done (scripts and tests; the GUI polls from a timer instead)."""
        return poll_until(self.poll, timeout, interval, f"download of {self.entry.name} still running after {timeout} s")

    def cancel(self) -> None:
        """Ask the download to stop at its next block; ``poll`` then returns a result with ``cancelled``."""
        self._stop.set()
