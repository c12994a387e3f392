"""Corrupted training labels, as contours drawn by another observer differ: grown, shrunk or shifted.

For experiments on noisy labels (DALE): a seeded fraction of the training cases gets one corruption each;
held-out cases are always scored against their own clean labels. Sizes are in voxels of the preprocessed grid.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["KINDS", "corrupt_label", "choose_corruptions"]

KINDS = ("dilate", "erode", "shift")


def corrupt_label(label: np.ndarray, kind: str, voxels: int, rng: np.random.Generator) -> np.ndarray:
    """``label`` with every foreground class dilated, eroded (never to nothing: fewer steps if needed) or shifted
    by ``voxels`` along a random in-plane direction (the last two axes, where contours are drawn)."""
    if kind not in KINDS:
        raise ValueError(f"unknown corruption {kind!r}; choose one of {', '.join(KINDS)}")
    if voxels < 1:
        raise ValueError("the corruption needs at least one voxel")
    out = label.copy()
    structure = ndimage.generate_binary_structure(label.ndim, 1)
    if kind == "shift":
        angle = rng.uniform(0, 2 * np.pi)
        offset = [0] * (label.ndim - 2) + [int(round(voxels * np.sin(angle))), int(round(voxels * np.cos(angle)))]
        return ndimage.shift(label, offset, order=0, mode="constant", cval=0).astype(label.dtype)
    for value in np.unique(label):
        if value == 0:
            continue
        mask = label == value
        if kind == "dilate":
            grown = ndimage.binary_dilation(mask, structure, iterations=voxels)
            out[grown & (label == 0)] = value
        else:
            shrunk = mask                      # a lesion too small for one erosion step stays as it is
            for steps in range(voxels, 0, -1):
                candidate = ndimage.binary_erosion(mask, structure, iterations=steps)
                if candidate.any():
                    shrunk = candidate
                    break
            out[mask & ~shrunk] = 0
    return out


def choose_corruptions(names: Sequence[str], fraction: float, seed: int) -> dict[str, str]:
    """A seeded choice of round(fraction x n) cases, each with a corruption kind (cycling through KINDS in a
    seeded order, so a fraction of one third or more sees every kind)."""
    if not 0 <= fraction <= 1:
        raise ValueError("the corrupted fraction must be in [0, 1]")
    count = int(round(fraction * len(names)))
    if count == 0:
        return {}
    rng = np.random.default_rng(seed)
    chosen = sorted(str(n) for n in rng.choice(sorted(names), count, replace=False))
    kinds = list(rng.permutation(KINDS))
    return {name: str(kinds[i % len(kinds)]) for i, name in enumerate(chosen)}
