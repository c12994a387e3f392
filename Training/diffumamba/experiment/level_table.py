"""One table over experiments that differ only in their label condition: the share of corrupted labels (DALE) or of
labelled patients (Diff-CL), each with its arms, its baseline and the ceiling (supervised on every clean label).

``experiment`` compares arms *within* one folder; a condition is a property of the whole folder (its
``corrupt_fraction`` or ``labeled_fraction``), and a method's ablation arms may live in a second folder of the same
condition so that the main arms of every condition finish first. Here every folder's finished rows are pooled per
condition and compared with the same statistics (``experiment.statistics``: patients as units, seeds averaged first,
paired t 95 % CI and Wilcoxon p). Folders are refused unless they share the plan, splits, folds, seeds and budget,
so every arm of a row saw the same held-out patients and every paired difference is a real pairing.

    python -m diffumamba.experiment.level_table --baseline supervised --ceiling WORK/clean \
        --level '30 %=WORK/dale-30,WORK/dale-30-ablations' --level '10 %=WORK/dale-10' --out table.md
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import statistics
import sys
from pathlib import Path
from typing import Optional, Sequence

from ..files import atomic_write_text
from .dale_report import partition_lines
from .runner import experiment_rows
from .statistics import compare, difference_cell

__all__ = ["CEILING", "level_table", "main"]

CEILING = "supervised, all labels clean"
# Spec fields every folder of one table must share (the label condition and the arms may differ).
_SHARED = ("n_folds", "folds", "seeds", "train_fraction", "group_pattern", "batch_size", "training", "networks",
           "label_noise", "labeled_unit")


def _spec(folder: Path) -> dict:
    path = folder / "experiment.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run the experiment first (or give its --results folder)")
    return json.loads(path.read_text())


def _check_comparable(folders: Sequence[Path]) -> None:
    first = _spec(folders[0])
    for folder in folders[1:]:
        other = _spec(folder)
        differ = [k for k in _SHARED if first["spec"].get(k) != other["spec"].get(k)]
        if first["plan_hash"] != other["plan_hash"]:
            differ.append("plan")
        if differ:
            raise ValueError(f"{folder} and {folders[0]} differ in {', '.join(differ)}: their runs are not paired; "
                             "run every experiment of one table with the same plan, folds, seeds and budget")


def level_table(levels: Sequence[tuple[str, Sequence[Path]]], baseline: str, ceiling: Optional[Path] = None
                ) -> tuple[str, list[dict]]:
    """(markdown table with each condition's partition lines, per-case rows with a ``condition`` column)."""
    folders = [f for _, group in levels for f in group] + ([ceiling] if ceiling else [])
    _check_comparable(folders)
    ceiling_rows = [{**r, "network": CEILING} for r in experiment_rows(ceiling)] if ceiling else []
    spec = _spec(folders[0])["spec"]
    groups = None
    lines = ["| condition | arm | runs | patients | Dice mean ± sd | ΔDice vs baseline [95% CI], p | band Dice mean ± sd "
             "| Δband Dice [95% CI], p | HD95 (mm) mean ± sd | ΔHD95 (mm) [95% CI], p | empty | train s (median) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    all_rows, notes = [], []
    for condition, group in levels:
        rows = []
        for folder in group:
            found = experiment_rows(folder)
            clash = {r["network"] for r in found} & {r["network"] for r in rows}
            if clash:
                raise ValueError(f"arm {sorted(clash)[0]!r} is in two folders of condition {condition!r}")
            rows += found
        if not any(r["network"] == baseline for r in rows):
            raise ValueError(f"condition {condition!r} has no finished {baseline!r} run yet")
        rows += ceiling_rows
        if spec.get("group_pattern"):
            from ..training.splits import case_groups

            groups = case_groups(sorted({r["case"] for r in rows}), spec["group_pattern"])
        order = [name for folder in group for name in _arm_order(folder)] + [CEILING]
        entries = sorted(compare(rows, baseline, groups), key=lambda e: order.index(e["network"])
                         if e["network"] in order else len(order))
        for entry in entries:
            seconds = [float(r["train_seconds"]) for r in rows if r["network"] == entry["network"] and "train_seconds" in r]
            lines.append("| " + " | ".join([
                condition, entry["network"], str(entry["runs"]), str(entry["dice"]["n"]),
                _mean(entry, "dice", 3), difference_cell(entry, "dice", baseline, 3),
                _mean(entry, "band_dice", 3), difference_cell(entry, "band_dice", baseline, 3),
                _mean(entry, "hd95_mm", 1), difference_cell(entry, "hd95_mm", baseline, 1),
                str(entry["empty_predictions"]),
                f"{statistics.median(seconds):.0f}" if seconds else "",
            ]) + " |")
        all_rows += [{"condition": condition, **r} for r in rows]
        for folder in group:
            notes += [f"- {condition}: {line}" for line in partition_lines(folder)]
    table = "\n".join(lines) + "\n"
    if notes:
        table += "\nDALE partition (fuzzy picks on corrupted cases against a random pick of the same size):\n\n"
        table += "\n".join(notes) + "\n"
    return table, all_rows


def _arm_order(folder: Path) -> list[str]:
    """The folder's arms in the order its experiment was asked for (with Diff-CL's branch rows after their arm)."""
    from .runner import experiment_arms, scored_names

    spec = _spec(folder)["spec"]
    return scored_names(experiment_arms(spec["networks"], spec.get("methods", ["supervised"])))


def _mean(entry: dict, metric: str, digits: int) -> str:
    if metric not in entry:
        return ""
    return f"{entry[metric]['mean']:.{digits}f} ± {entry[metric]['sd']:.{digits}f}"


def _csv(rows: Sequence[dict]) -> str:
    columns = ["condition", "network", "method", "fold", "seed", "case", "label", "dice", "band_dice", "hd95_mm",
               "ref_volume_ml", "pred_volume_ml", "train_seconds"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{row[k]:.6g}" if isinstance(row.get(k), float) else row.get(k, "")) for k in columns})
    return buffer.getvalue()


def _level(text: str) -> tuple[str, list[Path]]:
    name, sep, folders = text.partition("=")
    if not sep or not name or not folders:
        raise argparse.ArgumentTypeError(f"--level {text!r}: give NAME=FOLDER[,FOLDER...]")
    return name, [Path(f) for f in folders.split(",")]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m diffumamba.experiment.level_table", description=__doc__.split("\n\n")[0])
    parser.add_argument("--level", type=_level, action="append", required=True, metavar="NAME=FOLDER[,FOLDER...]",
                        help="a condition and the experiment folders of its arms (repeat, in table order)")
    parser.add_argument("--baseline", required=True, help="the arm each condition's arms are compared with")
    parser.add_argument("--ceiling", type=Path, help=f"an experiment folder whose arm is added to every condition as "
                                                     f"{CEILING!r}")
    parser.add_argument("--out", type=Path, required=True, help="markdown table to write (and a .csv beside it)")
    args = parser.parse_args(argv)
    try:
        table, rows = level_table(args.level, args.baseline, args.ceiling)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    written = {args.out: table, args.out.with_suffix(".csv"): _csv(rows)}
    for path, text in written.items():
        atomic_write_text(path, text)
        if path.read_text() != text:                      # "wrote" only for what reads back whole
            print(f"error: {path} does not read back as written (disk full?); write it elsewhere", file=sys.stderr)
            return 1
    print(table, end="")
    print(f"wrote {args.out} and {args.out.with_suffix('.csv')} ({len(rows)} rows)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
