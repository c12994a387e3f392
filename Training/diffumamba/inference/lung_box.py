"""A fast classical lung bounding box for CT, to spend the network's time where lung tumours can be.

Body = the largest connected component above -500 HU, holes filled slice by slice; lungs = air (below
-400 HU) inside the body, keeping components of at least 50 ml and a tenth of the largest (the two lungs, not
stomach or bowel gas). The box around them, plus a margin for tumours on the pleura or mediastinum, is what ``predict
--crop lungs`` segments; voxels outside are background. Runs on a 2x downsampled copy (about a second on
a 512 x 512 x 134 CT).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..geometry import body_array, padded_box

MIN_LUNG_SHARE = 0.1            # of the largest air component: smaller ones are not lung

__all__ = ["lung_box", "body_array"]


def lung_box(hu: np.ndarray, spacing: Sequence[float], margin_mm: float = 20.0,
             min_lung_ml: float = 50.0) -> Optional[tuple[slice, slice, slice]]:
    """(z, y, x) slices of the lungs' bounding box plus ``margin_mm``; None when no lungs are found."""
    from scipy import ndimage

    step = (1, 2, 2) if hu.shape[1] >= 128 else (1, 1, 1)
    small = hu[:, ::step[1], ::step[2]]
    small_spacing = [s * k for s, k in zip(spacing, step)]
    filled = body_array(small)
    if filled is None:
        return None
    lungs, count = ndimage.label((small < -400) & filled)
    if count == 0:
        return None
    voxel_ml = float(np.prod(small_spacing)) / 1000.0
    sizes = np.bincount(lungs.ravel()) * voxel_ml
    sizes[0] = 0
    # stomach or bowel gas can pass 50 ml (70 ml beside 3.9 litres of lung in lung2) and would stretch the box over
    # the abdomen; a lung is never under a tenth of the largest (lesion_pasting.lung_mask's rule)
    keep = np.flatnonzero(sizes >= max(min_lung_ml, MIN_LUNG_SHARE * sizes.max()))
    if keep.size == 0:
        return None
    where = np.argwhere(np.isin(lungs, keep))
    return padded_box(where.min(0) * step, (where.max(0) + 1) * step, spacing, margin_mm, hu.shape)
