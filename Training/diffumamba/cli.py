"""The ``diffumamba`` command line: one sub-command per job, each in ``diffumamba.commands``.

Errors the user can fix (bad files, bad options) are reported as one ``error:`` line on stderr with
exit status 2 and no traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys

from .commands import convert, demo, evaluate, experiment, export, info, network, predict, preprocess, propagate, train


class UserError(Exception):
    """A problem with the user's input, reported without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffumamba", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (demo, info, network, convert, preprocess, train, evaluate, experiment, predict, propagate, export):
        module.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except (UserError, ValueError, FileNotFoundError, PermissionError) as err:
        print(f"diffumamba {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"diffumamba {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
