"""Runs the ``diffumamba`` command line in a subprocess without blocking Slicer's GUI.

Why a subprocess: torch's memory and any crash stay out of Slicer, the GPU is freed at exit, the same
command runs outside Slicer, and cancelling is a kill. The command reports progress as one JSON object per
line on stderr (``--progress json``); two reader threads queue the child's lines and the GUI drains them
with ``poll()`` from a timer, so no Qt is needed here and the class is tested without Slicer. ``cancel()``
kills the whole process tree (the child is started in its own process group / session), because killing
the launcher alone can leave the real Python process running. The reader threads (``start_line_readers``) and
the tree kill (``stop_process_tree``) are shared with the persistent correction worker (``correction_worker``).
Cancel never waits on the GUI thread: the grace before the kill runs in a daemon thread (``stop_in_background``),
and every wait has a bound, Windows' included (a hung ``taskkill`` or child must not freeze Slicer).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

__all__ = ["Progress", "parse_progress", "CommandRunner", "RunResult", "process_options", "start_line_readers",
           "stop_process_tree", "stop_in_background", "poll_until"]

# Windows constants (subprocess defines them only on Windows): PythonSlicer.exe and taskkill are console
# programs, so without these every run and every cancel would flash a console window.
CREATE_NEW_PROCESS_GROUP = 0x00000200
CREATE_NO_WINDOW = 0x08000000
STARTF_USESHOWWINDOW = 0x00000001
SW_HIDE = 0


def process_options(platform: str = sys.platform, startupinfo_class=None) -> dict:
    """``Popen`` keyword arguments that start a child in its own process group (so cancel reaches everything it
    starts) and, on Windows, without a console window, as ``slicer.util.launchConsoleProcess`` hides it."""
    if platform != "win32":
        return {"start_new_session": True}
    info = (startupinfo_class or subprocess.STARTUPINFO)()
    info.dwFlags |= STARTF_USESHOWWINDOW
    info.wShowWindow = SW_HIDE
    return {"creationflags": CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW, "startupinfo": info}


@dataclass
class Progress:
    stage: str
    fraction: float      # of the whole run, 0..1
    message: str = ""


def parse_progress(line: str) -> Optional[Progress]:
    """A progress line of ``--progress json``, or None for any other line (log text)."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    if not isinstance(record, dict) or "stage" not in record or "fraction" not in record:
        return None
    try:
        fraction = min(max(float(record["fraction"]), 0.0), 1.0)
    except (TypeError, ValueError):
        return None
    return Progress(str(record["stage"]), fraction, str(record.get("message", "")))


@dataclass
class RunResult:
    returncode: int
    cancelled: bool
    error: str = ""       # the command's own "error:" / "FAILED:" line, for the user

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.cancelled


class CommandRunner:
    """One run of a command; ``start``, then ``poll`` until it returns a ``RunResult``, or ``cancel``.

    Args:
        command: the argument list (in Slicer: ``[PythonSlicer, "-m", "diffumamba", ...]``).
        on_progress: called with each ``Progress`` (from ``poll``'s thread).
        on_log: called with every other output line.
    """

    def __init__(self, command: Sequence[str], on_progress: Callable[[Progress], None] = lambda p: None,
                 on_log: Callable[[str], None] = lambda line: None, env: Optional[dict] = None,
                 cwd: Optional[str] = None):
        self.command, self.env, self.cwd = list(command), env, cwd
        self.on_progress, self.on_log = on_progress, on_log
        self.process: Optional[subprocess.Popen] = None
        self._lines: "queue.Queue[tuple[str, Optional[str]]]" = queue.Queue()
        self._readers: list[threading.Thread] = []
        self._cancelled = False
        self._error = ""

    def start(self) -> None:
        if self.process is not None:
            raise RuntimeError("this runner was started already; make a new one per run")
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        encoding="utf-8", errors="replace", bufsize=1, env=self.env,
                                        cwd=self.cwd, **process_options())
        self._readers = start_line_readers(self.process, self._lines)

    def poll(self) -> Optional[RunResult]:
        """Hand the lines read so far to the callbacks; the result once the process ended and all is read."""
        if self.process is None:
            raise RuntimeError("start() the runner first")
        while True:
            try:
                _, line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                continue
            progress = parse_progress(line)
            if progress is not None:
                self.on_progress(progress)
                continue
            if ": error: " in line or ": FAILED: " in line:
                self._error = line.split(": error: ", 1)[-1] if ": error: " in line else line
            self.on_log(line)
        if self.process.poll() is None or any(reader.is_alive() for reader in self._readers):
            return None
        if not self._lines.empty():
            return self.poll()
        return RunResult(self.process.returncode, self._cancelled, self._error)

    def wait(self, timeout: Optional[float] = None, interval: float = 0.05) -> RunResult:
        """Poll until done (scripts and tests; the GUI polls from a timer instead)."""
        return poll_until(self.poll, timeout, interval, f"{self.command[0]} still running after {timeout} s")

    def cancel(self, grace_seconds: float = 3.0) -> Optional[threading.Thread]:
        """Stop the child and everything it started: terminate the group, kill what is left after the grace.
        Returns at once (the grace runs in the returned daemon thread; ``poll`` reports the end). A run cancelled
        after its process ended but before ``poll`` reported it counts as cancelled too: the user said Cancel
        before seeing a result, so none may be applied."""
        if self.process is None:
            return None
        self._cancelled = True
        if self.process.poll() is not None:
            return None
        return stop_in_background(self.process, grace_seconds)


def start_line_readers(process: subprocess.Popen, lines: "queue.Queue[tuple[str, Optional[str]]]"
                       ) -> list[threading.Thread]:
    """One daemon thread per output stream of ``process`` putting ``(stream name, line)`` on ``lines`` and
    ``(name, None)`` at its end, so the GUI thread only ever takes from the queue and never blocks on a read."""
    readers = []
    for name in ("stdout", "stderr"):
        stream = getattr(process, name)
        if stream is None:
            continue
        reader = threading.Thread(target=_read, args=(name, stream, lines), daemon=True)
        reader.start()
        readers.append(reader)
    return readers


def _read(name: str, stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put((name, line.rstrip("\n")))
    lines.put((name, None))


def stop_process_tree(process: subprocess.Popen, grace_seconds: float = 3.0, platform: str = sys.platform,
                      run: Callable = subprocess.run) -> None:
    """Stop ``process`` (started with ``process_options``) and everything it started: terminate its group, kill
    what is left after the grace (Windows: ``taskkill /F /T``). Blocks for at most about twice the grace; use
    ``stop_in_background`` on the GUI thread."""
    if process.poll() is not None:
        return
    if platform == "win32":
        _stop_windows(process, grace_seconds, run)
        return
    group = os.getpgid(process.pid)
    _signal_group(group, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):   # still running after the grace: killed below
        process.wait(grace_seconds)
    _signal_group(group, signal.SIGKILL)   # grandchildren that ignored SIGTERM, or outlived the child
    with contextlib.suppress(subprocess.TimeoutExpired):   # SIGKILL cannot be ignored; a bound all the same
        process.wait(grace_seconds)


def _stop_windows(process: subprocess.Popen, grace_seconds: float, run: Callable) -> None:
    """``taskkill /F /T`` (the tree), bounded: a taskkill or a child that hangs (a process stuck in a driver call
    cannot be ended) must not hang the caller; whatever is left is reported by the process's own poll later."""
    try:
        info = process_options("win32")["startupinfo"]
    except AttributeError:                  # subprocess.STARTUPINFO exists only on Windows (tests elsewhere)
        info = None
    with contextlib.suppress(subprocess.TimeoutExpired, OSError):
        run(["taskkill", "/F", "/T", "/PID", str(process.pid)], capture_output=True, startupinfo=info,
            creationflags=CREATE_NO_WINDOW, timeout=max(grace_seconds, 1.0))
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(grace_seconds)


def stop_in_background(process: subprocess.Popen, grace_seconds: float = 3.0) -> threading.Thread:
    """``stop_process_tree`` in a daemon thread, so a Cancel, a scene close or leaving Slicer never freezes the GUI
    for the grace (the review's K8: up to 3 s per cancel); the caller learns of the end from ``process.poll()``."""
    stopper = threading.Thread(target=stop_process_tree, args=(process, grace_seconds), daemon=True,
                               name=f"stop {process.pid}")
    stopper.start()
    return stopper


def poll_until(poll: Callable[[], Optional[object]], timeout: Optional[float], interval: float, late: str):
    """Call ``poll`` until it returns something; TimeoutError(``late``) after ``timeout`` seconds."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        result = poll()
        if result is not None:
            return result
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(late)
        time.sleep(interval)


def _signal_group(group: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):   # the whole group has already exited
        os.killpg(group, sig)
