"""Cross-validation splits saved beside the dataset, and recorded limited-data subsets.

Like nnU-Net's ``splits_final.json``: created once (seeded shuffle, k folds) and reused, so every
network and every method in an experiment sees the same folds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from ..files import atomic_write_text

__all__ = ["kfold_splits", "load_or_create_splits", "fold_cases", "subset"]


def kfold_splits(names: Sequence[str], folds: int = 5, seed: int = 12345) -> list[dict[str, list[str]]]:
    names = sorted(names)
    if not 2 <= folds <= len(names):
        raise ValueError(f"cannot make {folds} folds from {len(names)} cases")
    order = np.random.default_rng(seed).permutation(len(names))
    parts = np.array_split(order, folds)
    return [{"train": sorted(names[i] for j, p in enumerate(parts) if j != k for i in p),
             "val": sorted(names[i] for i in parts[k])} for k in range(folds)]


def load_or_create_splits(path: Path, names: Sequence[str], folds: int = 5, seed: int = 12345) -> list[dict]:
    """Read ``path`` if it exists (and covers exactly these cases), else create and save it."""
    if path.exists():
        splits = json.loads(path.read_text())
        covered = sorted({n for s in splits for n in s["train"] + s["val"]})
        if covered != sorted(names):
            raise ValueError(f"{path} does not cover the dataset's cases; delete it to make new splits")
        if len(splits) != folds:
            raise ValueError(f"{path} has {len(splits)} folds, not {folds}; delete it or use --folds {len(splits)}")
        return splits
    splits = kfold_splits(names, folds, seed)
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
