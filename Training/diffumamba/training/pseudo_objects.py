"""Objects that are not tumours, for teaching a correction network to follow clicks rather than to recognise.

With a handful of patients a correction network learns what *their* tumours look like and then ignores a click on
a new patient's tumour (on LUNG1-003, held out, the probability under the click was 0.001 after 1000 iterations).
Interactive segmenters avoid this by training on many kinds of objects (nnInteractive: 120 datasets; SAM: any
region). Here a patch's label is sometimes replaced by a region grown from a random voxel: the connected voxels
within an intensity tolerance of it, inside a ball of random radius, smoothed. Whatever the user clicks, the
network has seen "segment the coherent thing under the click, stop where it changes".
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from scipy import ndimage

__all__ = ["pseudo_object", "inner_click_index"]


def pseudo_object(image: np.ndarray, rng: np.random.Generator, spacing: Sequence[float],
                  radius_mm: tuple[float, float] = (5.0, 25.0), tolerance: tuple[float, float] = (0.2, 0.8),
                  min_voxels: int = 30, attempts: int = 8) -> Optional[np.ndarray]:
    """A mask grown in ``image`` (the patch's first channel, normalised) around a random voxel of its middle half,
    or None when no attempt gives ``min_voxels``."""
    spacing = np.asarray(spacing, float)
    shape = np.array(image.shape)
    grid = None
    for _ in range(attempts):
        seed = tuple(int(rng.integers(n // 4, max(n // 4 + 1, 3 * n // 4))) for n in shape)
        similar = np.abs(image - image[seed]) <= rng.uniform(*tolerance)
        if grid is None:
            grid = np.indices(image.shape, dtype=np.float32)
        radius = rng.uniform(*radius_mm)
        ball = sum(((g - s) * d) ** 2 for g, s, d in zip(grid, seed, spacing)) <= radius ** 2
        region = ndimage.binary_opening(similar & ball, iterations=1)
        components, _ = ndimage.label(region)
        if components[seed] == 0:
            continue
        found = ndimage.binary_fill_holes(components == components[seed])
        if found.sum() >= min_voxels:
            return found
    return None


def inner_click_index(reference: np.ndarray, rng: np.random.Generator, spacing: Sequence[float],
                      depth: float = 0.5) -> Optional[tuple[float, ...]]:
    """A random voxel of ``reference`` at least ``depth`` times its deepest point's depth from the border: where a
    person's first click lands (off-centre), as RITM samples it."""
    if not reference.any():
        return None
    distance = ndimage.distance_transform_edt(np.pad(reference, 1), sampling=spacing)[(slice(1, -1),) * reference.ndim]
    candidates = np.argwhere(distance >= depth * distance.max())
    return tuple(float(i) for i in candidates[rng.integers(len(candidates))])
