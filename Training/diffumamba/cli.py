"""The ``diffumamba`` command line: one sub-command per job, each in ``diffumamba.commands``.

Errors the user can fix (bad files, bad options, a full disk, an unwritable folder, too little memory) are
reported as one ``error:`` line on stderr naming the file, with exit status 2 and no traceback; anything else
is a bug and keeps its traceback. ``--debug`` shows the traceback of every error.
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import sys
import traceback

from .commands import (convert, correct, demo, evaluate, experiment, export, grow_from_seeds, import_nnunet, info,
                       network, package, predict, preprocess, propagate, serve, train)
from .files import OutputError


class UserError(Exception):
    """A problem with the user's input, reported without a traceback."""


USER_ERRORS = (UserError, ValueError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError,
               FileExistsError, MemoryError, OutputError)
USER_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EEXIST, errno.ENOTDIR, errno.EISDIR,
               errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}
_ERRNO_HINTS = {errno.ENOSPC: "free some space or write elsewhere", errno.EROFS: "the file system is read-only; "
                "write elsewhere", errno.EACCES: "check its permissions or write elsewhere", errno.EPERM:
                "check its permissions or write elsewhere", errno.EEXIST: "remove it or choose another name",
                errno.ENOTDIR: "a part of the path is a file, not a folder; choose another path",
                errno.EISDIR: "it is a folder; give a file", errno.EFBIG: "the file size limit (ulimit -f) was reached"}


# PyTorch's CPU allocator reports a failed allocation as a plain RuntimeError; only its own message tells it from a
# bug, so only that message is matched.
_CPU_ALLOCATOR_FAILED = re.compile(r"DefaultCPUAllocator: can't allocate memory: you tried to allocate (\d+) bytes")


def _out_of_memory(err: BaseException) -> bool:
    return (isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError"     # torch.cuda.OutOfMemoryError
            or (isinstance(err, RuntimeError) and _CPU_ALLOCATOR_FAILED.search(str(err)) is not None))


def is_user_error(err: BaseException) -> bool:
    """Whether ``err`` is the user's to fix (one error line) rather than a bug (a traceback)."""
    if isinstance(err, USER_ERRORS) or _out_of_memory(err):
        return True
    return isinstance(err, OSError) and err.errno in USER_ERRNOS


def describe(err: BaseException) -> str:
    """One line for a user error: OSErrors name their file and say what to do."""
    if _out_of_memory(err):
        allocation = _CPU_ALLOCATOR_FAILED.search(str(err))
        if allocation:
            size = int(allocation.group(1))
            reason = f"could not allocate {size / 1e9:,.1f} GB" if size >= 1e8 else f"could not allocate {size:,} bytes"
        else:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else "out of memory"
        return f"{reason}: not enough memory; close other programs, use smaller images or another --device"
    if isinstance(err, OSError) and not isinstance(err, OutputError) and err.strerror:
        names = " -> ".join(str(n) for n in (err.filename, err.filename2) if n is not None) or "a file"
        hint = _ERRNO_HINTS.get(err.errno)
        return f"{names}: {err.strerror}" + (f"; {hint}" if hint else "")
    return str(err)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffumamba", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show the traceback of every error")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (demo, info, network, convert, preprocess, train, evaluate, experiment, predict, propagate, correct,
                   grow_from_seeds, serve, export, package, import_nnunet):
        module.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command line in this process (tests, scripts); the process entry is ``program``."""
    return _run(build_parser().parse_args(argv))


def program() -> None:
    """The process entry (the ``diffumamba`` script, ``python -m diffumamba``). A command that ends a long-lived
    worker (``serve``: its parser sets ``leave_at_once``) leaves with ``os._exit`` once its output is flushed: its
    replies are out and every file it wrote was written whole, but the interpreter's teardown of torch took 1.4 s of
    the 1.7 s from ``quit`` to the exit on 2 busy cores (0.06 s without), and a client stopping it (the Slicer module
    on closing a scene) waited on nothing, or ran out of patience and killed it."""
    args = build_parser().parse_args()
    code = _run(args)
    if getattr(args, "leave_at_once", False):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)


def _run(args: argparse.Namespace) -> int:
    try:
        return args.run(args) or 0
    except KeyboardInterrupt:
        print(f"diffumamba {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:            # MemoryError is an Exception too
        if not is_user_error(err):
            raise
        if args.debug:
            traceback.print_exc()
        print(f"diffumamba {args.command}: error: {describe(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    program()
