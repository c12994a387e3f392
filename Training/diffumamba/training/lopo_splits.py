"""Leave-one-patient-out splits for a dataset of a few whole-CT patients and their pasted copies.

``splits_final.json`` (``training/splits``) with one fold per patient: its own case is the validation case, and
neither it nor any copy of it (same group under the dataset's ``group_pattern``) trains; cases whose group matches
``--always`` (CTs without a voxel label of their own, e.g. box-labelled hosts) train in every fold.
    python -m diffumamba.training.lopo_splits DATASET [--always REGEX]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Optional, Sequence

from ..files import atomic_write_text
from .splits import case_groups

__all__ = ["leave_one_group_out"]


def leave_one_group_out(names: Sequence[str], group_pattern: Optional[str],
                        always: Optional[str] = None) -> list[dict[str, list[str]]]:
    """One fold per group not matching ``always``: validate on the group's case named as the group itself (the
    original CT; else all its cases), train on every case of the other groups."""
    names = sorted(names)
    groups = case_groups(names, group_pattern)
    keys = sorted({g for g in groups.values() if not (always and re.search(always, g))})
    if len(keys) < 2:
        raise ValueError(f"leave-one-out needs two groups or more, found {len(keys)}")
    splits = []
    for key in keys:
        own = [n for n in names if groups[n] == key]
        splits.append({"train": [n for n in names if groups[n] != key], "val": [key] if key in own else own})
    return splits


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m diffumamba.training.lopo_splits", description=__doc__.split("\n")[0])
    parser.add_argument("dataset", type=Path, help="nnU-Net raw dataset folder (dataset.json, imagesTr)")
    parser.add_argument("--always", metavar="REGEX", help="groups that train in every fold, never held out")
    args = parser.parse_args(argv)
    from ..data.dataset import RawDataset

    dataset = RawDataset(args.dataset)
    try:
        splits = leave_one_group_out([c.name for c in dataset.training_cases()], dataset.meta.get("group_pattern"),
                                     args.always)
    except ValueError as err:
        print(f"error: {args.dataset}: {err}", file=sys.stderr)
        return 2
    atomic_write_text(args.dataset / "splits_final.json", json.dumps(splits, indent=2) + "\n")
    print(f"wrote {args.dataset / 'splits_final.json'}: {len(splits)} folds, held out: "
          + ", ".join(s["val"][0] for s in splits))
    return 0


if __name__ == "__main__":
    sys.exit(main())
