"""``diffumamba evaluate``: per-case, per-label Dice, HD95, ASSD, surface Dice and volumes."""

from __future__ import annotations

import argparse
from pathlib import Path

from .progress_option import add_progress_argument, case_bar


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "evaluate", help="score predicted label maps against references",
        description="Match predictions to references by file name (NIfTI, NRRD, MHA), check that they share "
                    "a grid, and write metrics.csv (per case and label), summary.json (mean, sd, median) "
                    "and boxplot.png. Distances are in mm. Empty masks: both empty gives Dice 1, distances 0, "
                    "NSD 1; one empty gives Dice 0, NSD 0 and distances equal to the image diagonal.")
    parser.add_argument("--pred", type=Path, required=True, help="folder of predicted label maps")
    parser.add_argument("--ref", type=Path, required=True, help="folder of reference label maps")
    parser.add_argument("--out", type=Path, required=True, help="output folder for the reports")
    parser.add_argument("--labels", nargs="+", metavar="VALUE=NAME",
                        help="labels to score, e.g. 1=GTV (default: every non-zero value in the references)")
    parser.add_argument("--nsd-tolerance", type=float, default=2.0, metavar="MM",
                        help="tolerance of the normalised surface Dice in mm (default 2)")
    add_progress_argument(parser)
    parser.set_defaults(run=run)


def parse_labels(items: list[str] | None) -> dict[int, str] | None:
    if not items:
        return None
    labels = {}
    for item in items:
        value, _, name = item.partition("=")
        try:
            labels[int(value)] = name or f"label_{value}"
        except ValueError:
            raise ValueError(f"--labels takes VALUE=NAME with an integer value, got {item!r}") from None
    return labels


def run(args: argparse.Namespace) -> int:
    from ..evaluation.report import evaluate_folders, summarise, write_reports

    labels = parse_labels(args.labels)
    if args.nsd_tolerance <= 0:
        raise ValueError("--nsd-tolerance must be positive")
    rows = evaluate_folders(args.pred, args.ref, labels, args.nsd_tolerance,
                            progress=case_bar(args, "reading cases"))
    paths = write_reports(rows, args.out, {"pred": str(args.pred), "ref": str(args.ref),
                                           "nsd_tolerance_mm": args.nsd_tolerance})
    for label, entry in summarise(rows).items():
        print(f"{label}: {entry['cases']} cases, Dice {entry['dice']['mean']:.3f} ± {entry['dice']['sd']:.3f}, "
              f"HD95 {entry['hd95_mm']['median']:.1f} mm (median), NSD@{args.nsd_tolerance:g}mm "
              f"{entry['nsd']['mean']:.3f}; empty references {entry['ref_empty']}, empty predictions "
              f"{entry['pred_empty']}")
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0
