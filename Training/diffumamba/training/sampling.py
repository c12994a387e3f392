"""Training patches with nnU-Net's foreground oversampling.

In every batch the last ``round(batch * oversample)`` patches (at least one third by default) are
centred on a foreground voxel, so small tumours in large CTs are seen often enough; the others are
placed uniformly at random. Volumes smaller than the patch are zero-padded (label 0). Foreground
locations are sampled once per case (up to 10,000 voxels per class), as nnU-Net stores them.
Full-CT models may also draw hard negatives (``hard_negatives``): a share of the other patches centred on a case's
``negatives`` (soft tissue near the lungs, far from tumour), and place the random ones inside the case's ``region``
(its lung box) only.
With a ``margin`` the sampler returns the patch grown by the margin on every side, around the same centre, for
augmentation that rotates and scales before cropping back to the patch (``spatial_augmentation``); where the
patch lands is the same either way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

__all__ = ["TrainingCase", "PatchSampler", "case_weights"]

MAX_LOCATIONS = 10_000


@dataclass
class TrainingCase:
    name: str
    data: np.ndarray                     # (C, *spatial) float32
    label: np.ndarray                    # (*spatial) integer
    locations: dict[int, np.ndarray] = field(default_factory=dict)  # class -> (N, ndim) voxel indices
    source: Optional[Path] = None        # the cache file the data came from (named in errors)
    region: Optional[tuple] = None       # slices of the part random patches are centred in (None: anywhere)
    negatives: Optional[np.ndarray] = None  # (N, ndim) hard-negative patch centres (None: none)

    @classmethod
    def from_arrays(cls, name: str, data: np.ndarray, label: np.ndarray, seed: int = 0,
                    source: Optional[Path] = None) -> "TrainingCase":
        rng = np.random.default_rng(seed)
        locations = {}
        for value in np.unique(label):
            if value == 0:
                continue
            where = np.argwhere(label == value)
            if len(where) > MAX_LOCATIONS:
                where = where[rng.choice(len(where), MAX_LOCATIONS, replace=False)]
            locations[int(value)] = where
        return cls(name, data, label, locations, source)

    @classmethod
    def from_cache(cls, folder, name: str, seed: int = 0) -> "TrainingCase":
        """A case from the preprocessed cache of a plan (``data.cache``). Cached data with NaN/Inf values (written
        before preprocessing refused them: cubic resampling of 2-slice images could make some) raises ValueError
        naming the file: every step that drew from it would end in a NaN loss."""
        from ..data.cache import load_case
        from ..data.dataset import nonfinite_count

        data, label, _ = load_case(folder, name)
        source = Path(folder) / "cases" / f"{name}.npz"
        bad = nonfinite_count(data)
        if bad:
            raise ValueError(f"cached case {name} ({source}) holds {bad} NaN/Inf values: delete that file and run "
                             "again (the case is then preprocessed anew)")
        return cls.from_arrays(name, data, label, seed=seed, source=source)


class PatchSampler:
    """Draws batches of (data, label) patches.

    Args:
        cases: the training cases.
        patch_size: spatial patch size.
        batch_size: patches per batch.
        oversample_foreground: fraction of each batch forced to contain foreground (nnU-Net: 0.33).
        seed: seed of the sampler's own random generator (reproducible batches, resumable runs).
        margin: voxels added on both sides of each axis of every returned patch (default none).
        weights: relative chance of each case to be drawn (default: all equal), e.g. five whole-CT tumours among
            a thousand pasted nodules.
        hard_negative: chance of each patch not forced onto foreground to be centred on one of its case's
            ``negatives`` (cases without them: a random patch).
        in_region: centre the random patches inside each case's ``region`` where it has one.
    """

    def __init__(self, cases: Sequence[TrainingCase], patch_size: Sequence[int], batch_size: int,
                 oversample_foreground: float = 0.33, seed: int = 0, margin: Sequence[int] | None = None,
                 weights: Sequence[float] | None = None, hard_negative: float = 0.0, in_region: bool = False):
        if not cases:
            raise ValueError("no training cases")
        self.p = None
        if weights is not None:
            w = np.asarray(weights, float)
            if len(w) != len(cases) or not np.all(np.isfinite(w)) or w.min() < 0 or w.sum() <= 0:
                raise ValueError("case weights must be one non-negative number per case, not all 0")
            self.p = w / w.sum()
        self.cases, self.patch_size, self.batch_size = list(cases), tuple(patch_size), batch_size
        self.margin = tuple(margin) if margin is not None else (0,) * len(self.patch_size)
        self.sampling_size = tuple(p + 2 * m for p, m in zip(self.patch_size, self.margin))
        self.n_foreground = int(round(batch_size * oversample_foreground))
        if oversample_foreground > 0:
            self.n_foreground = max(1, self.n_foreground)
        if not 0.0 <= hard_negative <= 1.0:
            raise ValueError(f"hard_negative must lie in [0, 1], got {hard_negative}")
        self.hard_negative, self.in_region = hard_negative, in_region
        self.rng = np.random.default_rng(seed)
        self.drawn: list[str] = []          # the cases of the last batch, in order (methods that track cases)

    def batch(self) -> tuple[np.ndarray, np.ndarray]:
        """(B, C, *sampling_size) float32 and (B, 1, *sampling_size) int16 (the patch grown by the margin)."""
        data, labels = [], []
        self.drawn = []
        for index in range(self.batch_size):
            case = self.cases[self.rng.integers(len(self.cases)) if self.p is None
                              else self.rng.choice(len(self.cases), p=self.p)]
            self.drawn.append(case.name)
            force = index >= self.batch_size - self.n_foreground
            start = [s - m for s, m in zip(self.patch_start(case, force), self.margin)]
            d, l = self.crop(case, start, self.sampling_size)
            data.append(d)
            labels.append(l[None])
        return np.stack(data), np.stack(labels).astype(np.int16)

    def patch_start(self, case: TrainingCase, foreground: bool) -> list[int]:
        shape = case.label.shape
        if foreground and case.locations:
            cls = list(case.locations)[self.rng.integers(len(case.locations))]
            return self._centred(case.locations[cls][self.rng.integers(len(case.locations[cls]))], shape)
        if not foreground and self.hard_negative > 0 and case.negatives is not None:
            if self.rng.random() < self.hard_negative:
                return self._centred(case.negatives[self.rng.integers(len(case.negatives))], shape)
        if self.in_region and case.region is not None:
            centre = [int(self.rng.integers(r.start, max(r.stop, r.start + 1))) for r in case.region]
            return self._centred(centre, shape)
        return [int(self.rng.integers(min(0, n - p), max(0, n - p) + 1)) for p, n in zip(self.patch_size, shape)]

    def _centred(self, centre, shape) -> list[int]:
        """The start of the patch centred on a voxel, kept inside the volume where it fits."""
        return [int(np.clip(c - p // 2, min(0, n - p), max(0, n - p))) for c, p, n in zip(centre, self.patch_size, shape)]

    def crop(self, case: TrainingCase, start: Sequence[int], size: Sequence[int] | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
        """The box of ``size`` (default: the patch) at ``start`` (may be negative or overhang: padded with zeros)."""
        shape, size = case.label.shape, tuple(size or self.patch_size)
        source = tuple(slice(max(s, 0), max(min(s + p, n), max(s, 0))) for s, p, n in zip(start, size, shape))
        target = tuple(slice(src.start - s, src.stop - s) for src, s in zip(source, start))
        data = np.zeros((case.data.shape[0], *size), np.float32)
        label = np.zeros(size, case.label.dtype)
        data[(slice(None), *target)] = case.data[(slice(None), *source)]
        label[target] = case.label[source]
        return data, label


def case_weights(names: Sequence[str], factors: dict, require_match: bool = True) -> Optional[list[float]]:
    """Each case's drawing weight: the product of the factors whose regex it matches (``--case-weight``);
    ``require_match``: a regex that matches none of ``names`` is an error."""
    if not factors:
        return None
    import re

    weights = [1.0] * len(names)
    for pattern, factor in factors.items():
        matched = [i for i, name in enumerate(names) if re.search(pattern, name)]
        if not matched and require_match:
            raise ValueError(f"--case-weight {pattern!r} matches no training case")
        for i in matched:
            weights[i] *= float(factor)
    return weights
