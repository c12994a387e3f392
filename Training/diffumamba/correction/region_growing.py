"""The non-AI baseline of the click benchmark: seeds that compete to grow, as the Segment Editor's Grow from seeds.

Slicer's Grow from seeds (FastGrowCut, Zhu et al. 2014) gives every voxel the label of the seed it reaches by the
cheapest path, a path costing the intensity differences it crosses. Here the same competition runs with
scikit-image's minimal-cost paths (``MCP_Geometric``) over the gradient magnitude of the CT, inside the same lesion
box the network gets. The seeds are what a user of Grow from seeds has after the same clicks, recomputed from the
session's start each time (seeds persist, the grown result is a preview, as in Slicer):

- tumour: the starting mask shrunk by ``seed_radius_mm`` (a user starts from the segment) and a ball of
  ``seed_radius_mm`` at every include click;
- background: the box's border, a ball at every exclude click, and (when the session started from a mask) whatever
  lies farther than ``reach_mm`` from both that mask and the include clicks;
- a click overrides the opposite seeds within ``reach_mm`` of it, as a user repaints seeds around a correction.

The grown result replaces the mask within ``local_mm`` of the clicks only: a user accepts Grow from seeds where
they corrected and keeps the rest of a good contour (a propagated GTV is not redrawn by its first click).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from scipy import ndimage

from .clicks import Click, squared_distances
from .network_input import lesion_box

__all__ = ["GrowFromSeeds"]


class GrowFromSeeds:
    """Args: the CT (z, y, x) in HU and its spacing; the session's starting mask (None: empty); the box margin and
    minimum size, as the network's."""

    def __init__(self, image: np.ndarray, spacing: Sequence[float], start: Optional[np.ndarray] = None,
                 margin_mm: float = 20.0, minimum_mm: Sequence[float] = (96.0, 96.0, 96.0),
                 seed_radius_mm: float = 3.0, reach_mm: float = 10.0, local_mm: float = 20.0):
        self.image, self.spacing = image.astype(np.float32), tuple(float(s) for s in spacing)
        self.start = np.zeros(image.shape, bool) if start is None else start.astype(bool)
        self.margin_mm, self.minimum_mm = margin_mm, minimum_mm
        self.seed_radius_mm, self.reach_mm, self.local_mm = seed_radius_mm, reach_mm, local_mm

    def correct(self, mask: np.ndarray, clicks: Sequence[Click]) -> np.ndarray:
        from skimage.graph import MCP_Geometric

        box = lesion_box(mask.shape, self.spacing, self.start | mask.astype(bool), clicks, None, self.margin_mm,
                         self.minimum_mm)
        image, current = self.image[box], self.start[box]
        start = [b.start for b in box]
        local = [Click(tuple(i - o for i, o in zip(c.index, start)), c.positive) for c in clicks]
        include = self._near([c for c in local if c.positive], current.shape, self.seed_radius_mm)
        exclude = self._near([c for c in local if not c.positive], current.shape, self.seed_radius_mm)
        near_include = self._near([c for c in local if c.positive], current.shape, self.reach_mm)
        near_exclude = self._near([c for c in local if not c.positive], current.shape, self.reach_mm)
        inside = ndimage.distance_transform_edt(current, sampling=self.spacing) > self.seed_radius_mm
        outside = (ndimage.distance_transform_edt(~current, sampling=self.spacing) > self.reach_mm if current.any()
                   else np.zeros_like(current))
        tumour = ((inside & ~near_exclude) | include) & ~exclude
        background = exclude | ((outside & ~near_include) & ~tumour)
        border = np.ones(current.shape, bool)
        border[tuple(slice(1, -1) for _ in current.shape)] = False
        background |= border & ~tumour
        local_region = self._near(local, current.shape, self.local_mm)
        if not tumour.any():
            return self._paste(mask, box, mask[box].astype(bool) & ~local_region)
        # intensity differences crossed, at about one in-plane voxel of scale (noise is not an edge)
        gradient = ndimage.gaussian_gradient_magnitude(image, min(self.spacing) / np.asarray(self.spacing))
        costs = gradient / max(float(np.percentile(gradient, 95)), 1e-6) + 1e-3
        to_tumour = MCP_Geometric(costs, sampling=self.spacing).find_costs(np.argwhere(tumour))[0]
        to_background = MCP_Geometric(costs, sampling=self.spacing).find_costs(np.argwhere(background))[0]
        return self._paste(mask, box, np.where(local_region, to_tumour < to_background, mask[box].astype(bool)))

    def _near(self, clicks: Sequence[Click], shape, radius_mm: float) -> np.ndarray:
        out = np.zeros(shape, bool)
        for click in clicks:
            near = squared_distances(shape, click.index, self.spacing, radius_mm)
            if near is not None:
                window, squared = near
                out[window] |= squared <= radius_mm ** 2
        return out

    @staticmethod
    def _paste(mask: np.ndarray, box, inner: np.ndarray) -> np.ndarray:
        out = mask.astype(bool).copy()
        out[box] = inner
        return out
