"""Run a command line as a child process and measure it: wall seconds and the child's own peak memory.

``os.wait4`` returns the resource usage of that one child (its peak resident set), not the maximum over
every child so far as ``RUSAGE_CHILDREN`` would; worker processes the child starts (nnU-Net's augmentation
and export workers) are not included.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path


class CommandFailed(RuntimeError):
    """A measured command exited with a non-zero status (its output is in the log)."""


def tool(name: str) -> str:
    """The command-line tool ``name`` of the Python running this script: beside its interpreter first (a venv's
    ``bin/``, found without activating the venv), else on PATH; one clear error when neither has it."""
    beside = Path(sys.executable).with_name(name)
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise CommandFailed(f"{name} is neither beside {sys.executable} nor on PATH: install the benchmark's "
                            "nnU-Net into this interpreter (pip install -r bench/requirements-nnunet.txt)")
    return found


def run_measured(command: list[str], env: dict | None, log, cwd=None) -> dict:
    """Run ``command`` with its output appended to the open file ``log``; raise CommandFailed on a non-zero exit. A
    bare tool name is looked up with ``tool`` (the interpreter's own tools before PATH's)."""
    if os.sep not in command[0]:
        command = [tool(command[0]), *command[1:]]
    log.write(f"\n$ {shlex.join(command)}\n")
    log.flush()
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        raise CommandFailed(f"{command[0]} exited with {process.returncode}; see {log.name}")
    return {"seconds": seconds, "peak_mb": usage.ru_maxrss / 1024}
