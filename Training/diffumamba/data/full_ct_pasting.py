"""Several real lesions pasted into one whole chest CT: full-CT training cases for a model that must say "no" to
everything else in the chest.

A full-CT model learns what tumour is *not* only from the CTs it sees whole; five GTV patients teach the GTV's
intensity and little else, so it marks heart, mediastinum and chest wall. Pasting the LIDC lesions
(``lesion_pasting``) into the whole CT, several per copy and each copy anew, gives many lesions in the context of
every host's whole chest, on the host's own grid and slices. The label is the host's own tumour plus the pasted
lesions. A host whose tumour has only boxes (Lung-PET-CT-Dx) is first cut to the slabs without boxed slices, so
no unlabelled tumour is called background.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional, Sequence

import numpy as np

from .lesion_pasting import Host, PastePlacement, lesion_radius_mm, paste_lesion

__all__ = ["paste_many", "slabs_without", "with_avoid_map", "GTV_SCALE_RANGE"]

# LIDC nodules are mostly 5-15 mm; GTVs 15-70 mm. Scaling a lesion up to twice its size brings the pasted ones
# closer to the GTVs' range (1-150 ml) without inventing texture.
GTV_SCALE_RANGE = (1.0, 2.0)
BOX_MARGIN_MM = 16.0


def paste_many(host: Host, lesions: Sequence[tuple[object, object]], rng: np.random.Generator,
               tumour: Optional[np.ndarray] = None, scale_range: tuple[float, float] = GTV_SCALE_RANGE):
    """(CT image int16, label array uint8, placements): ``lesions`` (SimpleITK image, mask pairs) pasted one after
    the other into the whole ``host`` on its own grid, each kept apart from the host's tumour and from the lesions
    already in. A lesion with no room left is skipped. The label is ``tumour`` (on the host's grid) plus the
    pasted lesions."""
    import SimpleITK as sitk

    array = sitk.GetArrayFromImage(host.image).astype(np.int16)
    label = np.zeros(array.shape, np.uint8) if tumour is None else (tumour > 0).astype(np.uint8)
    spacing = np.array(host.image.GetSpacing()[::-1], float)
    current, placements = with_avoid_map(host), []
    for lesion_image, lesion_mask in lesions:
        radius = lesion_radius_mm(sitk.GetArrayFromImage(lesion_mask) > 0, lesion_image.GetSpacing()[::-1])
        box_mm = 2.0 * radius * scale_range[1] + BOX_MARGIN_MM
        pasted = paste_lesion(current, lesion_image, lesion_mask, rng, box_mm, scale_range=scale_range,
                              fine_grid_share=0.0)
        if pasted is None:
            continue
        box, mask, placement = pasted
        corner = np.array(host.image.TransformPhysicalPointToContinuousIndex(box.GetOrigin())[::-1])
        start = np.round(corner).astype(int)
        if np.abs(corner - start).max() > 1e-3:
            raise ValueError(f"{host.name}: a pasted box is not on the host's grid (corner at voxel {corner})")
        region = tuple(slice(s, s + n) for s, n in zip(start, box.GetSize()[::-1]))
        if any(r.start < 0 or r.stop > n for r, n in zip(region, array.shape)):
            continue                                   # candidates keep the box inside; never paste half a box
        values, inside = sitk.GetArrayFromImage(box), sitk.GetArrayFromImage(mask) > 0
        array[region] = values
        label[region][inside] = 1
        placements.append(placement)
        current = replace(current, image=_with_array(host.image, array),
                          avoid_mm=_nearer(current.avoid_mm, placement, radius * placement.scale, spacing))
    return _with_array(host.image, array), label, placements


def _with_array(reference, array: np.ndarray):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image


def _nearer(avoid_mm: np.ndarray, placement: PastePlacement, radius_mm: float, spacing: np.ndarray) -> np.ndarray:
    """The distance to the host's tumour or any lesion pasted so far, each new lesion taken as its enclosing ball
    (exact enough to keep lesions apart, and a second rather than a distance transform of the whole CT)."""
    axes = [(np.arange(n, dtype=np.float32) - c) * s
            for n, c, s in zip(avoid_mm.shape, placement.centre_index, spacing)]
    ball = np.sqrt(axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2 + axes[2][None, None, :] ** 2)
    return np.minimum(avoid_mm, ball - np.float32(radius_mm))


def with_avoid_map(host: Host) -> Host:
    """``host`` with a distance map to keep away from even when it has no tumour (then everywhere far)."""
    if host.avoid_mm is not None:
        return host
    return replace(host, avoid_mm=np.full(host.lung.shape, np.float32(1e6)))


def slabs_without(mask: np.ndarray, spacing_z: float, margin_mm: float = 20.0,
                  min_mm: float = 60.0) -> list[slice]:
    """The z ranges (slices of the volume) at least ``margin_mm`` from any slice where ``mask`` (the tumour's boxes)
    has voxels, each at least ``min_mm`` thick: the parts of a box-labelled CT that hold no tumour."""
    boxed = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(1))
    n = mask.shape[0]
    if not len(boxed):
        return [slice(0, n)]
    gap = int(np.ceil(margin_mm / spacing_z))
    parts = [slice(0, int(max(boxed.min() - gap, 0))), slice(int(min(boxed.max() + 1 + gap, n)), n)]
    return [p for p in parts if (p.stop - p.start) * spacing_z >= min_mm]
