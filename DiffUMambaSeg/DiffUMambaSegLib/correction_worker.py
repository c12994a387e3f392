"""The persistent correction worker: one ``diffumamba serve --stdio`` process, fed one JSON line per request.

The process loads the model once (``{"ready": true}`` on stdout), then answers each request line with one reply
line. Reading happens in ``runner``'s reader threads, so ``replies()`` (called from the GUI's timer) never blocks;
writing one request line to the pipe returns at once (one request at a time is far below the pipe's buffer); stopping
asks it to quit and closes its stdin on the calling (GUI) thread, and leaves the waiting and, after the grace,
``runner.stop_process_tree`` to a background thread: a scene close, a model change or leaving Slicer never freezes
the GUI for the grace (the review's K8: up to 10 s). A worker that died keeps its stderr tail and the command's own
``error:`` line for the user.
"""

from __future__ import annotations

import collections
import contextlib
import json
import queue
import subprocess
import threading
from pathlib import Path
from typing import Callable, Optional, Protocol, Sequence

from . import flows
from .environment import subprocess_environment
from .runner import process_options, start_line_readers, stop_process_tree

__all__ = ["CorrectionWorker", "WorkerDied", "Worker", "WorkerFactory", "serve_worker"]

TAIL_LINES = 20


class WorkerDied(RuntimeError):
    """The worker is gone (its stdin is closed); ``failure()`` says why."""


class CorrectionWorker:
    """Args: the command (``[PythonSlicer, -m, diffumamba, serve, --stdio, --model, ..., --device, ...]``) and the
    environment (the shipped package first on PYTHONPATH)."""

    def __init__(self, command: Sequence[str], env: Optional[dict] = None):
        self.command, self.env = list(command), env
        self.process: Optional[subprocess.Popen] = None
        self.ready = False
        self.load_seconds: Optional[float] = None
        self._lines: "queue.Queue[tuple[str, Optional[str]]]" = queue.Queue()
        self._readers: list = []
        self._stderr: "collections.deque[str]" = collections.deque(maxlen=TAIL_LINES)
        self._error = ""

    def start(self) -> "CorrectionWorker":
        if self.process is not None:
            raise RuntimeError("this worker was started already; make a new one")
        self.process = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace",
                                        bufsize=1, env=self.env, **process_options())
        self._readers = start_line_readers(self.process, self._lines)
        return self

    @property
    def pid(self) -> Optional[int]:
        return self.process.pid if self.process is not None else None

    def send(self, request: dict) -> None:
        """Write one request line; ``WorkerDied`` when the process has gone."""
        try:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
        except (OSError, ValueError) as error:          # BrokenPipe, or stdin closed
            raise WorkerDied(f"the correction worker is not running ({error})") from None

    def replies(self) -> list[dict]:
        """The reply lines read so far (the ready line is taken here and sets ``ready``); never blocks."""
        replies = []
        while True:
            try:
                stream, line = self._lines.get_nowait()
            except queue.Empty:
                return replies
            if line is None:
                continue
            if stream == "stderr":
                self._stderr.append(line)
                if ": error: " in line:
                    self._error = line.split(": error: ", 1)[1]
                continue
            try:
                reply = json.loads(line)
            except ValueError:
                self._stderr.append(line)               # the protocol says stdout carries replies only
                continue
            if isinstance(reply, dict) and reply.get("ready") is True:
                self.ready, self.load_seconds = True, reply.get("seconds")
            elif isinstance(reply, dict):
                replies.append(reply)

    @property
    def ended(self) -> bool:
        """The process has exited and everything it wrote was taken by ``replies()``."""
        return (self.process is not None and self.process.poll() is not None
                and not any(reader.is_alive() for reader in self._readers) and self._lines.empty())

    @property
    def returncode(self) -> Optional[int]:
        return self.process.poll() if self.process is not None else None

    def failure(self) -> str:
        """Why it stopped, in one line where the command said so (its ``error:`` line), else its stderr tail."""
        if self._error:
            return self._error
        tail = [line for line in self._stderr if line.strip()]
        return " | ".join(tail[-6:]) if tail else f"exit status {self.returncode}"

    def stop(self, grace_seconds: float = 2.0) -> Optional[threading.Thread]:
        """Ask it to quit (it finishes the request it is on) and close its stdin, then return at once: a daemon
        thread waits for it and stops the process tree if it is still there after the grace (the thread, for a
        caller that may wait: tests, the command line). The worker leaves without the interpreter's teardown
        (``cli.program``): 0.06 s from ``quit`` to its exit on 2 busy cores, where torch's teardown took 1.7 s and
        twice more than the grace then allowed.
        A daemon thread, as ``runner.stop_in_background``: leaving Slicer is not held up by it, and a worker whose
        stdin is closed ends by itself."""
        if self.process is None or self.process.poll() is not None:
            return None
        with contextlib.suppress(WorkerDied):
            self.send({"command": "quit"})
        with contextlib.suppress(OSError, ValueError):
            self.process.stdin.close()
        stopper = threading.Thread(target=_quit_or_stop, args=(self.process, grace_seconds), daemon=True,
                                   name=f"stop correction worker {self.process.pid}")
        stopper.start()
        return stopper


def _quit_or_stop(process: subprocess.Popen, grace_seconds: float) -> None:
    """The grace for a polite quit, then ``stop_process_tree`` (which returns at once when it quit)."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(grace_seconds)
    stop_process_tree(process, grace_seconds)


class Worker(Protocol):
    """What ``correction.ClickCorrection`` needs of a worker (``CorrectionWorker``; a scripted one in the tests)."""
    ready: bool

    def send(self, request: dict) -> None: ...

    def replies(self) -> list: ...

    @property
    def ended(self) -> bool: ...

    @property
    def returncode(self) -> Optional[int]: ...

    def failure(self) -> str: ...

    def stop(self): ...                               # returns at once (never waits on the GUI thread)


WorkerFactory = Callable[[Path, str], Worker]          # (model, device) -> a started worker


def serve_worker(services) -> WorkerFactory:
    """``diffumamba serve --stdio`` run by the application's Python with the shipped package (``logic.Services``)."""
    def start(model: Path, device: str) -> Worker:
        command = flows.serve_command(model, device, services.python())
        return CorrectionWorker(command, env=subprocess_environment(services.package())).start()
    return start
