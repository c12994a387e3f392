"""Image geometry shared by inference, propagation and training: comparing grids (every place two images must
line up voxel for voxel uses one rule), boxes, and the body of a CT."""

from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["grid_differences", "padded_box", "bounding_box", "body_array"]


def grid_differences(a, b) -> list[str]:
    """How grid ``a`` differs from grid ``b`` (SimpleITK images): size, spacing, origin, direction; empty if equal.

    Tolerances absorb the rounding of header formats (NIfTI stores float32), not real offsets:
    spacing to 1e-4 relative, origin to 0.01 mm, direction cosines to 1e-4.
    """
    problems = []
    if a.GetSize() != b.GetSize():
        problems.append(f"size {a.GetSize()} vs {b.GetSize()}")
    if not np.allclose(a.GetSpacing(), b.GetSpacing(), rtol=1e-4, atol=1e-5):
        problems.append(f"spacing {a.GetSpacing()} vs {b.GetSpacing()}")
    if not np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-2):
        problems.append(f"origin {a.GetOrigin()} vs {b.GetOrigin()}")
    if not np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-4):
        problems.append("direction differs")
    return problems


def padded_box(low, high, spacing, margin_mm: float, shape) -> tuple[slice, ...]:
    """Array slices of the index box [low, high) grown by ``margin_mm`` per axis (``spacing`` in mm per axis),
    clipped to ``shape``."""
    margin = [int(np.ceil(margin_mm / float(s))) for s in spacing]
    return tuple(slice(max(0, int(lo) - m), min(int(n), int(hi) + m)) for lo, hi, m, n in zip(low, high, margin, shape))


def bounding_box(mask: np.ndarray, spacing, margin_mm: float = 0.0) -> tuple[slice, ...]:
    """Array slices of ``mask``'s bounding box plus ``margin_mm``, clipped to the array."""
    where = np.argwhere(mask)
    return padded_box(where.min(0), where.max(0) + 1, spacing, margin_mm, mask.shape)


def body_array(hu: np.ndarray) -> Optional[np.ndarray]:
    """The body of a CT (the lung box and the registration mask both need it): the largest component above
    -500 HU, holes filled slice by slice; None if there is no tissue."""
    from scipy import ndimage

    body, count = ndimage.label(hu > -500)
    if count == 0:
        return None
    sizes = np.bincount(body.ravel())
    sizes[0] = 0
    body = body == sizes.argmax()
    return np.stack([ndimage.binary_fill_holes(plane) for plane in body])
