"""The ``diffumamba`` command line: one sub-command per job, each in ``diffumamba.commands``.

Errors the user can fix (bad files, bad options, a full disk, an unwritable folder, too little memory) are
reported as one ``error:`` line on stderr naming the file, with exit status 2 and no traceback; anything else
is a bug and keeps its traceback. ``--debug`` shows the traceback of every error.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from .commands import (convert, correct, demo, evaluate, experiment, export, grow_from_seeds, import_nnunet, info,
                       network, package, predict, preprocess, propagate, serve, train)
from .user_errors import describe, is_user_error


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
