"""Resampling the prior scan and its GTV onto the current scan's grid through a registration."""

from __future__ import annotations

import numpy as np

__all__ = ["warp_image", "warp_mask", "jacobian_range"]


def warp_image(image, reference, transform, default: float | None = None):
    """``image`` resampled (linear) on ``reference``'s grid; outside: ``default`` (the image minimum)."""
    import SimpleITK as sitk

    if default is None:
        default = float(np.min(sitk.GetArrayViewFromImage(image)))
    return sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), reference, transform, sitk.sitkLinear, default,
                         sitk.sitkFloat32)


def warp_mask(mask, reference, transform):
    """A binary mask resampled on ``reference``'s grid: linear interpolation of the 0/1 mask, then >= 0.5
    (smoother than nearest neighbour, and the volume is kept under pure translation), as uint8."""
    import SimpleITK as sitk

    moved = sitk.Resample(sitk.Cast(mask > 0, sitk.sitkFloat32), reference, transform, sitk.sitkLinear, 0.0,
                          sitk.sitkFloat32)
    return sitk.Cast(moved >= 0.5, sitk.sitkUInt8)


def jacobian_range(transform, reference, spacing_mm: float = 4.0) -> tuple[float, float]:
    """(min, max) Jacobian determinant of ``transform`` over ``reference``'s extent on a coarse grid:
    below 0 means folding (implausible anatomy), far from 1 a large local volume change."""
    import SimpleITK as sitk

    spacing = np.maximum(np.array(reference.GetSpacing()), spacing_mm)
    size = np.maximum(3, np.round(np.array(reference.GetSize()) * np.array(reference.GetSpacing()) / spacing)).astype(int)
    grid = sitk.Image([int(n) for n in size], sitk.sitkUInt8)
    grid.SetOrigin(reference.GetOrigin())
    grid.SetSpacing([float(s) for s in spacing])
    grid.SetDirection(reference.GetDirection())
    field = sitk.TransformToDisplacementField(transform, sitk.sitkVectorFloat64, grid.GetSize(), grid.GetOrigin(),
                                              grid.GetSpacing(), grid.GetDirection())
    jacobian = sitk.GetArrayFromImage(sitk.DisplacementFieldJacobianDeterminant(field))  # a view would outlive its image
    # The filter differentiates one-sidedly on the border (wrong for any rotation): judge the interior.
    interior = tuple(slice(1, -1) if n >= 3 else slice(None) for n in jacobian.shape)
    jacobian = jacobian[interior]
    return float(jacobian.min()), float(jacobian.max())
