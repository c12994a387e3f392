"""Which training cases a run may learn labels from: labelled or unlabelled (semi-supervised), clean or corrupted
(noisy-label experiments). One function for ``train`` and ``experiment``, so both make the same choices."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .label_noise import choose_corruptions, corrupt_label
from .sampling import TrainingCase
from .splits import case_groups, subset

__all__ = ["CaseRoles", "assign_roles", "load_cases"]


@dataclass
class CaseRoles:
    labeled: list[str]
    unlabeled: list[str] = field(default_factory=list)
    corrupted: dict[str, str] = field(default_factory=dict)    # case -> corruption kind (and size: "dilate:2")
    corrupt_voxels: int = 3
    label_noise: str = "contour"

    def to_dict(self) -> dict:
        return asdict(self)          # a resume compares only the keys its checkpoint recorded (train.check_run_dir)


def assign_roles(train_names: Sequence[str], seed: int, labeled_fraction: float = 1.0,
                 labeled: Optional[Sequence[str]] = None, corrupt_fraction: float = 0.0,
                 corrupt_voxels: int = 3, label_noise: str = "contour",
                 group_pattern: Optional[str] = None) -> CaseRoles:
    """Labelled cases: ``labeled`` if given (each must be a training case), else a seeded ``labeled_fraction`` of
    the cases or, with ``group_pattern``, of the patients (all of a chosen patient's cases; label scarcity is a
    matter of patients contoured, not of crops); the others are unlabelled. A seeded ``corrupt_fraction`` of the
    labelled cases gets corrupted labels of the ``label_noise`` model (``label_noise.NOISE_MODELS``)."""
    names = sorted(train_names)
    if labeled:
        unknown = sorted(set(labeled) - set(names))
        if unknown:
            raise ValueError(f"--labeled names cases that are not training cases of this fold: {', '.join(unknown)}")
        chosen = sorted(labeled)
    else:
        chosen = _labelled_subset(names, labeled_fraction, seed, group_pattern) if labeled_fraction < 1 else names
    return CaseRoles(chosen, [n for n in names if n not in chosen],
                     choose_corruptions(chosen, corrupt_fraction, seed + 1, label_noise), corrupt_voxels, label_noise)


def _labelled_subset(names: list[str], fraction: float, seed: int, group_pattern: Optional[str]) -> list[str]:
    if not group_pattern:
        return subset(names, fraction, seed)
    groups = case_groups(names, group_pattern)
    patients = set(subset(sorted(set(groups.values())), fraction, seed))
    return [n for n in names if groups[n] in patients]


def load_cases(folder: Path, roles: CaseRoles, seed: int, cache: Optional[dict] = None,
               with_unlabeled: bool = True) -> tuple[list[TrainingCase], list[TrainingCase]]:
    """(labelled cases with their corruptions applied, unlabelled cases) from a plan's preprocessed cache."""
    cache = {} if cache is None else cache
    rng = np.random.default_rng(seed + 2)

    def case(name: str) -> TrainingCase:
        if name not in cache:
            cache[name] = TrainingCase.from_cache(folder, name, seed)
        return cache[name]

    labelled = []
    for name in roles.labeled:
        original = case(name)
        if name in roles.corrupted:
            label = corrupt_label(original.label, roles.corrupted[name], roles.corrupt_voxels, rng, original.data[0])
            labelled.append(TrainingCase.from_arrays(name, original.data, label, seed, original.source))
        else:
            labelled.append(original)
    unlabelled = [case(n) for n in roles.unlabeled] if with_unlabeled else []
    return labelled, unlabelled
