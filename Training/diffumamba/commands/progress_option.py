"""One ``--progress`` option for every long command, so a script redirecting a log gets lines, not bar redraws.

``bar`` (default) shows tqdm bars with rate and ETA; ``none`` shows no bar (a redirected ``train`` log was 258 kB of
bar redraws) and keeps the lines a command prints as its log (``train``'s one line per epoch, failures, results).
``json`` (``predict``, ``propagate``) writes one JSON object per step on stderr for the Slicer module.
"""

from __future__ import annotations

import argparse
from typing import Callable, Iterable, TypeVar

Item = TypeVar("Item")


def add_progress_argument(parser: argparse.ArgumentParser, json_lines: bool = False) -> None:
    choices = ["bar", "json", "none"] if json_lines else ["bar", "none"]
    help_text = ("bar: progress bars with rate and ETA (default); none: no bars, only the command's own log lines"
                 + ("; json: one JSON line per step on stderr for GUIs" if json_lines else ""))
    parser.add_argument("--progress", choices=choices, default="bar", help=help_text)


def shows_bars(args: argparse.Namespace) -> bool:
    return getattr(args, "progress", "bar") == "bar"


def case_bar(args: argparse.Namespace, desc: str, unit: str = "case") -> Callable[[Iterable[Item]], Iterable[Item]]:
    """Wraps an iterable in a tqdm bar, or leaves it bare under ``--progress none``."""
    from tqdm import tqdm

    return lambda items: tqdm(items, desc=desc, unit=unit, disable=not shows_bars(args))
