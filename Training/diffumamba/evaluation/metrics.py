"""Per-label overlap and surface metrics on physical (mm) grids, with explicit rules for empty masks.

Distances use MONAI's implementations (``compute_hausdorff_distance``, ``compute_average_surface_distance``,
``compute_surface_dice``) with the image spacing. Both masks are first cropped to the bounding box of
their union plus one voxel: every surface voxel stays inside, so the distance transforms give the same
numbers on a far smaller array (a GTV is a few cm inside a 512x512x134 CT).

Empty masks never produce NaN or infinity:

| reference | prediction | Dice | HD95, ASSD | NSD |
|---|---|---|---|---|
| empty | empty | 1 | 0 | 1 |
| empty xor | empty | 0 | the image diagonal in mm (the worst possible) | 0 |

and the ``ref_empty`` / ``pred_empty`` columns say which rule applied, so summaries can exclude them.

``band_dice`` is the Dice inside the band of ``BAND_VOXELS`` voxels either side of the reference's border (a cube
metric, in voxels as label noise and DALE's fuzzy band are): where contours are disputed, which a whole-volume
Dice dominated by the tumour's core hides. 1 when the reference is empty and so is the prediction, 0 when
exactly one is.
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np
import torch

__all__ = ["METRIC_NAMES", "label_metrics", "band_dice", "dice"]

METRIC_NAMES = ("dice", "hd95_mm", "assd_mm", "nsd", "band_dice", "ref_volume_ml", "pred_volume_ml")
BAND_VOXELS = 3


def label_metrics(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float],
                  nsd_tolerance_mm: float = 2.0) -> dict[str, float | bool]:
    """Metrics of one binary prediction against one binary reference on the same grid.

    Args:
        pred, ref: boolean (or 0/1) arrays of the same shape, 2D or 3D.
        spacing: voxel size in mm along the array axes.
        nsd_tolerance_mm: tolerance of the normalised surface Dice.
    """
    pred, ref = np.asarray(pred).astype(bool), np.asarray(ref).astype(bool)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    if len(spacing) != pred.ndim:
        raise ValueError(f"spacing needs {pred.ndim} values, got {len(spacing)}")
    voxel_ml = float(np.prod(spacing)) / 1000.0
    n_pred, n_ref = int(pred.sum()), int(ref.sum())
    result: dict[str, float | bool] = {
        "ref_volume_ml": n_ref * voxel_ml, "pred_volume_ml": n_pred * voxel_ml,
        "ref_empty": n_ref == 0, "pred_empty": n_pred == 0,
    }
    if n_pred == 0 and n_ref == 0:
        return {**result, "dice": 1.0, "hd95_mm": 0.0, "assd_mm": 0.0, "nsd": 1.0, "band_dice": 1.0}
    if n_pred == 0 or n_ref == 0:
        diagonal = math.sqrt(sum((n * s) ** 2 for n, s in zip(pred.shape, spacing)))
        return {**result, "dice": 0.0, "hd95_mm": diagonal, "assd_mm": diagonal, "nsd": 0.0, "band_dice": 0.0}
    result["dice"] = dice(pred, ref)
    result["band_dice"] = band_dice(pred, ref)
    result.update(_surface_metrics(*_crop_to_union(pred, ref), spacing, nsd_tolerance_mm))
    return result


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice of two masks; 1 when both are empty (the table's rule)."""
    pred, ref = np.asarray(pred).astype(bool), np.asarray(ref).astype(bool)
    total = int(pred.sum()) + int(ref.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(pred, ref).sum()) / total


def _crop_to_union(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    union = np.logical_or(pred, ref)
    slices = []
    for axis in range(union.ndim):
        present = np.flatnonzero(union.any(axis=tuple(a for a in range(union.ndim) if a != axis)))
        slices.append(slice(max(present[0] - 1, 0), present[-1] + 2))
    # Pad by one voxel of background everywhere so that surfaces touching the image border are surfaces.
    return tuple(np.pad(mask[tuple(slices)], 1) for mask in (pred, ref))


def _surface_metrics(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float],
                     tolerance_mm: float) -> dict[str, float]:
    def one_hot(mask):
        return torch.from_numpy(np.stack([~mask, mask])[None].astype(np.float32))

    y_pred, y = one_hot(pred), one_hot(ref)
    spacing = [float(s) for s in spacing]
    with warnings.catch_warnings():  # MONAI 1.5+ warns about its own internal use of a deprecated argument
        warnings.simplefilter("ignore", FutureWarning)
        return _monai_surface_metrics(y_pred, y, spacing, tolerance_mm)


def _monai_surface_metrics(y_pred, y, spacing, tolerance_mm):
    from monai.metrics import (compute_average_surface_distance, compute_hausdorff_distance,
                               compute_surface_dice)

    hd95 = compute_hausdorff_distance(y_pred, y, percentile=95, spacing=spacing)
    assd = compute_average_surface_distance(y_pred, y, symmetric=True, spacing=spacing)
    nsd = compute_surface_dice(y_pred, y, class_thresholds=[tolerance_mm], spacing=spacing)
    return {"hd95_mm": float(hd95.item()), "assd_mm": float(assd.item()), "nsd": float(nsd.item())}


def band_dice(pred: np.ndarray, ref: np.ndarray, radius: int = BAND_VOXELS) -> float:
    """Dice of two non-empty boolean masks counted only within ``radius`` voxels of ``ref``'s border."""
    from scipy import ndimage

    pred, ref = _crop_to_union(pred, ref)
    pad = [(radius, radius)] * ref.ndim
    pred, ref = np.pad(pred, pad), np.pad(ref, pad)
    cube = np.ones((3,) * ref.ndim, bool)
    band = ndimage.binary_dilation(ref, cube, iterations=radius) & ~ndimage.binary_erosion(ref, cube, iterations=radius)
    p, r = pred & band, ref & band
    total = int(p.sum()) + int(r.sum())
    return 2.0 * int((p & r).sum()) / total if total else 1.0
