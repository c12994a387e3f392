"""Clicks: where a simulated user clicks, and how clicks reach the network.

The simulated user is the one of the interactive-segmentation literature (RITM, DeepEdit, nnInteractive and the
NoC@85/90 protocol): it looks at the current mask, takes the largest connected error (missed tumour or spurious
mask) and clicks the point of it farthest from the error's border; a click in a miss is positive ("include"), a
click in a spurious region negative ("exclude"). Training and the benchmark use the same user, so what the
network learns to answer is the click the benchmark gives.

A click reaches the network as a Gaussian blob of ``SIGMA_MM`` millimetres in one of two channels (positive,
negative), so its footprint is the same physical size on every grid. A slice the user drew by hand reaches it
densely: its tumour voxels in the positive channel, its other voxels in the negative one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from scipy import ndimage

__all__ = ["SIGMA_MM", "Click", "next_click", "click_maps", "squared_distances"]

SIGMA_MM = 3.0


@dataclass(frozen=True)
class Click:
    """``index``: continuous voxel index (z, y, x) on the grid in use; ``positive``: include (True) or exclude."""

    index: tuple[float, ...]
    positive: bool


def next_click(prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float]) -> Optional[Click]:
    """The simulated user's next click: the deepest point (in mm) of the largest connected error; None when the
    prediction equals the reference."""
    prediction, reference = prediction.astype(bool), reference.astype(bool)
    best = None
    for positive, error in ((True, reference & ~prediction), (False, prediction & ~reference)):
        components, count = ndimage.label(error)
        if count == 0:
            continue
        sizes = np.bincount(components.ravel())[1:]
        largest = int(np.argmax(sizes)) + 1
        if best is None or sizes[largest - 1] > best[0]:
            best = (int(sizes[largest - 1]), positive, components, largest)
    if best is None:
        return None
    _, positive, components, largest = best
    box = ndimage.find_objects(components)[largest - 1]
    component = np.pad(components[box] == largest, 1)      # the error's border (and the grid's edge) is distance 0
    depth = ndimage.distance_transform_edt(component, sampling=spacing)[(slice(1, -1),) * component.ndim]
    deepest = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return Click(tuple(float(i + b.start) for i, b in zip(deepest, box)), positive)


def squared_distances(shape: Sequence[int], centre: Sequence[float], spacing: Sequence[float],
                      reach_mm: float) -> Optional[tuple]:
    """(region, squared mm distances to ``centre`` over it) for the window of ``shape`` within ``reach_mm`` of it
    along each axis; None when the window misses the grid. One place for "near a click" on anisotropic grids."""
    spacing = np.asarray(spacing, float)
    centre = np.asarray(centre, float)
    reach = np.ceil(reach_mm / spacing).astype(int)
    low = np.maximum(np.floor(centre).astype(int) - reach, 0)
    high = np.minimum(np.ceil(centre).astype(int) + reach + 1, shape)
    if np.any(high <= low):
        return None
    axes = [((np.arange(lo, hi) - c) * s) ** 2 for lo, hi, c, s in zip(low, high, centre, spacing)]
    squared = axes[0].reshape(-1, *([1] * (len(axes) - 1)))
    for axis, values in enumerate(axes[1:], start=1):
        squared = squared + values.reshape(*([1] * axis), -1, *([1] * (len(axes) - axis - 1)))
    return tuple(slice(lo, hi) for lo, hi in zip(low, high)), squared


def click_maps(shape: Sequence[int], clicks: Sequence[Click], spacing: Sequence[float],
               sigma_mm: float = SIGMA_MM) -> np.ndarray:
    """(2, *shape) float32: positive and negative clicks as Gaussian blobs (peak 1, ``sigma_mm``), combined by
    maximum so two clicks never add up to more than one."""
    maps = np.zeros((2, *shape), np.float32)
    for click in clicks:
        near = squared_distances(shape, click.index, spacing, 3 * sigma_mm)
        if near is None:
            continue                                     # the click lies outside this grid
        window, squared = near
        blob = np.exp(-squared / (2 * sigma_mm ** 2)).astype(np.float32)
        region = (0 if click.positive else 1, *window)
        np.maximum(maps[region], blob, out=maps[region])
    return maps
