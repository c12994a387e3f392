"""What a correction network sees besides the image, and the box around the lesion it works in.

Channels after the image's: the current mask (0/1), the positive and the negative evidence (click blobs, and the
slices the user drew, densely). Training builds them on patches of the preprocessed grid and inference on the
box it crops, with this one function, so the network is asked exactly what it learnt.

A click re-segments the lesion, not the CT: the network runs on the box that holds the current mask, the clicks and
the drawn slices plus a margin (at least one training patch), so a click costs the same on a 512 x 512 x 300 CT
as on a crop.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .clicks import SIGMA_MM, Click, click_maps

__all__ = ["EXTRA_CHANNELS", "correction_channels", "lesion_box"]

EXTRA_CHANNELS = ("mask", "include", "exclude")
MAXIMUM_MM = 160.0      # the largest box side: a 400 ml GTV (9 cm across) with its margins fits


def correction_channels(mask: np.ndarray, clicks: Sequence[Click], spacing: Sequence[float],
                        drawn: Optional[np.ndarray] = None, sigma_mm: float = SIGMA_MM) -> np.ndarray:
    """(3, *shape) float32: ``mask``, include, exclude. ``drawn``: (2, *shape) dense evidence from slices the user
    drew (tumour voxels, other voxels of those slices), or None."""
    maps = click_maps(mask.shape, clicks, spacing, sigma_mm)
    if drawn is not None:
        np.maximum(maps, drawn.astype(np.float32), out=maps)
    return np.concatenate([mask.astype(np.float32)[None], maps])


def lesion_box(shape: Sequence[int], spacing: Sequence[float], mask: np.ndarray, clicks: Sequence[Click],
               drawn: Optional[np.ndarray], margin_mm: float, minimum_mm: Sequence[float]) -> tuple[slice, ...]:
    """The box (slices into ``shape``) around the clicks, the drawn evidence and the parts of the mask they concern,
    grown by ``margin_mm`` and to at least ``minimum_mm`` per axis (kept inside the grid).

    A part of the mask (connected component) is concerned when a click or a drawn slice lies within ``margin_mm``
    of its bounding box, or when nothing was clicked or drawn: a click on a lymph node leaves the primary alone.
    No side exceeds ``MAXIMUM_MM`` when there are clicks: a larger box is centred on the latest click, so a click on
    a spurious region spanning the chest (a poor prediction) costs what a click on a tumour costs."""
    points = [np.asarray(c.index, float) for c in clicks]
    fixed = np.flatnonzero((drawn[0] | drawn[1]).any(axis=(1, 2))) if drawn is not None else np.array([], int)
    if drawn is not None and drawn[0].any():                 # what the user drew, not the emptied rest of a slice
        nonzero = np.nonzero(drawn[0])
        points += [np.array([a.min() for a in nonzero], float), np.array([a.max() for a in nonzero], float)]
    anchors, reach = list(points), margin_mm / float(spacing[0])
    for low, high in _component_boxes(mask):
        near_slice = any(low[0] - reach <= z <= high[0] + reach for z in fixed)
        if not (anchors or len(fixed)) or near_slice or _near(low, high, anchors, spacing, margin_mm):
            points += [low.astype(float), high.astype(float)]
    if not points:
        raise ValueError("nothing to correct: the mask is empty and there is no click or drawn slice")
    low, high = np.min(points, axis=0), np.max(points, axis=0)
    spacing = np.asarray(spacing, float)
    margin = np.ceil(margin_mm / spacing)
    low, high = low - margin, high + margin
    shortfall = np.maximum(np.ceil(np.asarray(minimum_mm, float) / spacing) - (high - low + 1), 0)
    low, high = low - np.floor(shortfall / 2), high + np.ceil(shortfall / 2)
    if clicks:                 # a click on a huge region corrects its neighbourhood, not the whole region
        largest = np.floor(MAXIMUM_MM / spacing)
        centre = np.asarray(clicks[-1].index, float)
        too_big = high - low + 1 > largest
        low = np.where(too_big, np.clip(centre - largest / 2, low, high - largest + 1), low)
        high = np.where(too_big, low + largest - 1, high)
    box = []
    for lo, hi, n in zip(low, high, shape):
        lo, hi = int(np.floor(lo)), int(np.ceil(hi)) + 1
        if lo < 0:                                   # slide the box back inside before clipping it
            hi, lo = hi - lo, 0
        if hi > n:
            lo, hi = max(0, lo - (hi - n)), n
        box.append(slice(lo, hi))
    return tuple(box)


def _component_boxes(mask: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(lowest, highest) voxel index of every connected part of ``mask`` (labelled within its bounding box)."""
    from scipy import ndimage

    if not mask.any():
        return []
    nonzero = np.nonzero(mask)
    offset = np.array([a.min() for a in nonzero])
    region = tuple(slice(int(a.min()), int(a.max()) + 1) for a in nonzero)
    labels, _ = ndimage.label(mask[region])
    return [(offset + [s.start for s in found], offset + [s.stop - 1 for s in found])
            for found in ndimage.find_objects(labels)]


def _near(low: np.ndarray, high: np.ndarray, points: Sequence[np.ndarray], spacing: Sequence[float],
          margin_mm: float) -> bool:
    """Whether any point lies within ``margin_mm`` of the box [low, high]."""
    spacing = np.asarray(spacing, float)
    return any(np.linalg.norm(np.maximum(np.maximum(low - p, p - high), 0) * spacing) <= margin_mm for p in points)
