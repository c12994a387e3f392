"""Progress for people (a tqdm bar) and for programs (one JSON object per line on stderr).

The JSON form is what the Slicer module parses: ``{"stage": ..., "fraction": 0..1, "message": ...}``
where ``fraction`` is the whole run's progress, so a GUI needs no knowledge of the stages.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Protocol

__all__ = ["Progress", "make_progress"]


class Progress(Protocol):
    def report(self, stage: str, fraction: float, message: str = "") -> None: ...

    def close(self) -> None: ...


class JsonProgress:
    def __init__(self, stream=None):
        self.stream = stream or sys.stderr

    def report(self, stage: str, fraction: float, message: str = "") -> None:
        self.stream.write(json.dumps({"stage": stage, "fraction": round(min(max(fraction, 0.0), 1.0), 4),
                                      "message": message, "time": round(time.time(), 3)}) + "\n")
        self.stream.flush()

    def close(self) -> None:
        """Lines are flushed as they are written; nothing is left to close."""


class BarProgress:
    """A tqdm bar in percent of the whole run, with rate and ETA; the stage is shown beside it."""

    def __init__(self):
        from tqdm import tqdm

        self.bar = tqdm(total=100, unit="%", bar_format="{l_bar}{bar}| {n:.0f}/{total}% [{elapsed}<{remaining}] {postfix}")

    def report(self, stage: str, fraction: float, message: str = "") -> None:
        self.bar.n = round(100 * fraction, 1)
        self.bar.set_postfix_str(f"{stage}: {message}" if message else stage, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


class NoProgress:
    """``--progress none``: the run stays silent (scripts, tests)."""

    def report(self, stage: str, fraction: float, message: str = "") -> None:
        """Shows nothing, by request."""

    def close(self) -> None:
        """Nothing was opened."""


def make_progress(mode: str) -> Progress:
    return {"json": JsonProgress, "bar": BarProgress, "none": NoProgress}[mode]()
