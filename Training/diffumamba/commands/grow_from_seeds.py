"""``diffumamba grow-from-seeds``: the click benchmark's baseline without AI, with ``correct``'s files and checks."""

from __future__ import annotations

import argparse

from .correct import add_job_arguments, read_job, report


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "grow-from-seeds", help="correct a GTV mask with include/exclude clicks by Grow from seeds (no model)",
        description="Correct --mask on --image with the clicks in --clicks by Grow from seeds, as the Segment "
                    "Editor's effect and the click benchmark's baseline (correction/region_growing.py): --mask "
                    "shrunk by 3 mm and 3 mm balls at include clicks are tumour seeds; the lesion box's border, "
                    "balls at exclude clicks and what lies over 10 mm from the mask and the include clicks are "
                    "background seeds; the grown result replaces the mask within 20 mm of the clicks. The same "
                    "files, clicks JSON and checks as 'diffumamba correct', without a model and without "
                    "fixed_slices; give the session's starting mask as --mask and all of its clicks "
                    "(docs/correction.md).")
    add_job_arguments(parser, fixed_slices=False)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .correction_service import GrowFromSeedsService

    job = read_job(args)
    report(args, GrowFromSeedsService().correct(job, str(args.clicks)))
    return 0
