"""Cross-validation splits saved beside the dataset, and recorded limited-data subsets.

Like nnU-Net's ``splits_final.json``: created once (seeded shuffle, k folds) and reused, so every
network and every method in an experiment sees the same folds.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..files import atomic_write_text

__all__ = ["kfold_splits", "case_groups", "load_or_create_splits", "fold_cases", "subset"]


def kfold_splits(names: Sequence[str], folds: int = 5, seed: int = 12345,
                 group_pattern: Optional[str] = None) -> list[dict[str, list[str]]]:
    """k folds of the cases; with ``group_pattern`` whole groups go to one fold.

    ``group_pattern`` is a regular expression searched in each case name; its first group (or the whole
    match) names the case's group, e.g. ``^(\\d+)_`` keeps ``01_pre`` and ``01_post`` (one patient) together,
    so no patient is in training and validation at once.
    """
    names = sorted(names)
    groups = case_groups(names, group_pattern)
    keys = sorted(set(groups.values()))
    if not 2 <= folds <= len(keys):
        raise ValueError(f"cannot make {folds} folds from {len(keys)} " + ("groups" if group_pattern else "cases"))
    order = np.random.default_rng(seed).permutation(len(keys))
    fold_of = {keys[i]: k for k, part in enumerate(np.array_split(order, folds)) for i in part}
    return [{"train": [n for n in names if fold_of[groups[n]] != k],
             "val": [n for n in names if fold_of[groups[n]] == k]} for k in range(folds)]


def case_groups(names: Sequence[str], group_pattern: Optional[str]) -> dict[str, str]:
    """Case name -> group key (the name itself without a pattern)."""
    if not group_pattern:
        return {n: n for n in names}
    try:
        pattern = re.compile(group_pattern)
    except re.error as err:
        raise ValueError(f"bad group pattern {group_pattern!r}: {err}") from None
    groups = {}
    for name in names:
        match = pattern.search(name)
        if not match:
            raise ValueError(f"case {name!r} does not match the group pattern {group_pattern!r}")
        # the first group that took part in the match: alternatives such as '^(LIDC-IDRI-\\d{4})_|^(.+)$' name
        # the patient in different ways for different kinds of case
        groups[name] = next((g for g in match.groups() if g is not None), match.group(0))
    return groups


def load_or_create_splits(path: Path, names: Sequence[str], folds: int = 5, seed: int = 12345,
                          group_pattern: Optional[str] = None) -> list[dict]:
    """Read ``path`` if it exists (and covers exactly these cases, groups kept together), else create and save it."""
    if path.exists():
        splits = json.loads(path.read_text())
        covered = sorted({n for s in splits for n in s["train"] + s["val"]})
        if covered != sorted(names):
            raise ValueError(f"{path} does not cover the dataset's cases; delete it to make new splits")
        if len(splits) != folds:
            raise ValueError(f"{path} has {len(splits)} folds, not {folds}; delete it or use --folds {len(splits)}")
        groups = case_groups(names, group_pattern)
        for split in splits:
            if {groups[n] for n in split["train"]} & {groups[n] for n in split["val"]}:
                raise ValueError(f"{path} puts one group in training and validation; delete it to make new splits")
        return splits
    splits = kfold_splits(names, folds, seed, group_pattern)
    atomic_write_text(path, json.dumps(splits, indent=2) + "\n")
    return splits


def fold_cases(splits: list[dict], names: Sequence[str], fold: str) -> tuple[list[str], list[str]]:
    """(train, val) names; fold "all" trains on every case and validates on them too (as the official runs)."""
    if fold == "all":
        return sorted(names), sorted(names)
    try:
        index = int(fold)
        split = splits[index]
    except (ValueError, IndexError):
        raise ValueError(f"--fold must be 0..{len(splits) - 1} or 'all', got {fold!r}") from None
    return split["train"], split["val"]


def subset(names: Sequence[str], fraction: float, seed: int) -> list[str]:
    """A seeded random subset of round(fraction * n) cases (at least one), for limited-data runs."""
    if not 0 < fraction <= 1:
        raise ValueError("--train-fraction must be in (0, 1]")
    count = max(1, int(round(fraction * len(names))))
    chosen = np.random.default_rng(seed).choice(sorted(names), count, replace=False)
    return sorted(str(n) for n in chosen)
