"""Progressive merge (FocalClick, Chen et al., CVPR 2022): a click changes only the part of the mask it is about.

Without it the network's answer replaced the whole lesion box, so a click on one error could redraw a good contour
everywhere else: on an unseen patient a propagated GTV of Dice 0.93 fell to 0.62 after one click and 0.10 after
five (LUNG1-003, docs/correction.md). With it, an include click only adds the newly predicted region that touches
the click, an exclude click only removes the newly dropped region that touches it; the rest of the mask stays as the
user had it, so a click can never make a contour worse far from where the user clicked.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

from .clicks import SIGMA_MM, Click, squared_distances

__all__ = ["progressive_merge"]


def progressive_merge(previous: np.ndarray, answer: np.ndarray, click: Click, spacing: Sequence[float],
                      radius_mm: float = SIGMA_MM) -> np.ndarray:
    """``previous`` with the network's ``answer`` taken only in the connected changes of the click's sign that
    reach within ``radius_mm`` of ``click`` (both masks on the same grid; ``click.index`` continuous z, y, x)."""
    previous, answer = previous.astype(bool), answer.astype(bool)
    changed = answer & ~previous if click.positive else previous & ~answer
    if not changed.any():
        return previous.copy()
    labels, _ = ndimage.label(changed)
    reach = max(radius_mm, 0.5 * float(np.linalg.norm(spacing)))    # at least the voxel holding the click
    near = squared_distances(previous.shape, click.index, spacing, reach)
    if near is None:
        return previous.copy()
    window, squared = near
    touching = labels[window][squared <= reach ** 2]
    touched = np.unique(touching[touching > 0])
    merged = previous.copy()
    region = np.isin(labels, touched)
    merged[region] = click.positive
    return merged
