"""Keep only the predicted pieces that can be a lung tumour: candidates measured in docs/lung_gtv_model.md.

A full-CT model's false positives are pieces of heart, mediastinum, chest wall or abdomen; a lung GTV (primary or
nodal) lies in the lung or touches it. Each rule keeps or drops whole pieces (26-connected), never trims one:

- ``touching``: pieces with a voxel within ``reach_mm`` of the lungs (``lesion_pasting.lung_mask``: enclosed air,
  vessels filled in);
- ``inside``: pieces with at least ``min_share`` of their voxels inside the lungs;
- ``min-ml``: pieces of at least ``min_ml`` (drops specks only).

Which rule ``predict`` applies (none unless the numbers support one) is the model package's choice.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["RULES", "keep_pieces"]

RULES = ("touching", "inside", "min-ml")


def keep_pieces(mask: np.ndarray, hu: np.ndarray, spacing: Sequence[float], rule: str, reach_mm: float = 5.0,
                min_share: float = 0.5, min_ml: float = 1.0) -> np.ndarray:
    """The pieces of ``mask`` (on the CT ``hu``'s grid, spacing in mm along its axes) that ``rule`` keeps."""
    from scipy import ndimage

    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose one of {', '.join(RULES)}")
    from ..evaluation.lesions import components

    mask = np.asarray(mask, bool)
    labels, count = components(mask)
    if not count:
        return mask
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    if rule == "min-ml":
        keep = sizes * float(np.prod(spacing)) / 1000.0 >= min_ml
    else:
        from ..data.lesion_pasting import lung_mask

        lungs = lung_mask(np.asarray(hu, np.float32), spacing)
        if rule == "touching":
            near = ndimage.distance_transform_edt(~lungs, sampling=spacing) <= reach_mm
            keep = np.bincount(labels[near].ravel(), minlength=count + 1) > 0
        else:
            keep = np.bincount(labels[lungs].ravel(), minlength=count + 1) >= min_share * sizes
    keep[0] = False
    return keep[labels]
