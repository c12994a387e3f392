"""Real lesions pasted into real chest CTs: many lesions, each in the context of a whole chest.

The LIDC nodule crops show a real lesion but only a few millimetres around it; the full CTs show a real chest but
one tumour each. Pasting puts each crop's lesion (its voxels and 2 mm of its own surroundings, faded into the host
over 2 mm more; the surroundings only over the host's lung) at a plausible place of a host CT's lungs: deep in the parenchyma or touching the pleura, never in
air outside the body, away from the host's own tumour. The label is the lesion's mask and nothing else.

The pasted lesion is imaged as the host's scanner would image it: on the host's grid with the host's slice
thickness (a Gaussian slice profile along z), so a thin-slice nodule in a 5 mm host is not a sharp island in blurred
context (a network would learn "sharp = lesion"). With ``fine_grid`` the host is instead resampled onto the lesion's
thinner slices and the lesion keeps its detail: training sees both, so neither sharpness nor blur marks a lesion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from ..geometry import bounding_box

__all__ = ["Host", "PastePlacement", "body_air", "lung_mask", "paste_lesion", "lesion_radius_mm"]

LUNG_HU = -400.0            # air and lung parenchyma lie below, soft tissue above
MIN_LUNG_ML = 50.0          # smaller enclosed air (bowel gas, a trachea cut short) is not lung
MIN_LUNG_SHARE = 0.1        # nor is enclosed air under a tenth of the largest (stomach gas: 70 ml beside 3.9 l)
KEEP_MM = 2.0               # the lesion's own surroundings pasted as they are
FADE_MM = 2.0               # then faded into the host


@dataclass(frozen=True)
class PastePlacement:
    """Where and how one lesion went in (recorded per pasted case)."""

    centre_index: tuple[int, int, int]        # (z, y, x) on the host grid
    kind: str                                 # "parenchyma" or "pleura"
    scale: float
    fine_grid: bool


def lung_mask(hu: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """The lungs of a CT (z, y, x) in HU: enclosed air-like regions of at least 50 ml and a tenth of the largest
    (two lungs apart are each far more; stomach or bowel gas far less), vessels filled in.

    Air reaching the in-plane border of the volume is outside the body; the slice ends (z) may cut the lungs, so
    they do not count as outside.
    """
    from scipy import ndimage

    enclosed = (hu < LUNG_HU) & ~body_air(hu)
    labels, count = ndimage.label(enclosed)
    if not count:
        return np.zeros(hu.shape, bool)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    sizes = ndimage.sum(enclosed, labels, index=np.arange(1, count + 1)) * voxel_ml
    lungs = np.isin(labels, np.flatnonzero(sizes >= max(MIN_LUNG_ML, MIN_LUNG_SHARE * sizes.max())) + 1)
    return np.stack([ndimage.binary_fill_holes(s) for s in lungs])


def body_air(hu: np.ndarray) -> np.ndarray:
    """Air outside the body: air-like voxels connected to the in-plane border of the volume."""
    from scipy import ndimage

    air = hu < LUNG_HU
    labels, _ = ndimage.label(air)
    outside = np.unique(np.concatenate([labels[:, [0, -1], :].ravel(), labels[:, :, [0, -1]].ravel()]))
    return np.isin(labels, outside[outside > 0])


def lesion_radius_mm(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """How far the lesion reaches from its centre (the mean of its mask, where pasting puts it), in mm: the largest
    distance of a mask voxel from it. (Half the largest extent along an axis would fall short for most real nodules:
    their longest axis is oblique, and the mean is not the middle of the bounding box.)"""
    points = np.argwhere(mask)
    if not len(points):
        return 0.0
    offsets = (points - points.mean(0)) * np.asarray(spacing, float)
    return float(np.sqrt((offsets ** 2).sum(1)).max())


@dataclass
class Host:
    """A host CT ready for pasting: its lungs and the distances every placement needs, computed once."""

    image: object                       # SimpleITK image, HU
    name: str
    lung: np.ndarray
    depth_mm: np.ndarray                # inside the lungs: distance to their border
    avoid_mm: Optional[np.ndarray]      # distance to the host's own tumour (None: it has none marked)

    @classmethod
    def from_image(cls, image, name: str, avoid: Optional[np.ndarray] = None) -> "Host":
        from scipy import ndimage

        spacing = image.GetSpacing()[::-1]
        lung = lung_mask(_array(image).astype(np.float32), spacing)
        # Both distance transforms run in a box, not the whole CT (a third of the time on a chest CT), and are
        # exact where they are read: inside the lungs' box grown by one background voxel, a lung voxel's nearest
        # border voxel is in the box; with every tumour voxel in the box, so is its nearest tumour voxel. Beyond
        # the box, outside the lungs, no candidate is ever placed.
        depth = np.zeros(lung.shape, np.float32)
        one_voxel = max(spacing)                  # a margin of at least one voxel on every axis
        if lung.any():
            box = bounding_box(lung, spacing, one_voxel)
            depth[box] = ndimage.distance_transform_edt(lung[box], sampling=spacing)
        far = None
        if avoid is not None and avoid.any():
            avoid = avoid.astype(bool)
            far = np.full(lung.shape, np.float32(1e6))
            box = bounding_box(lung | avoid, spacing, one_voxel)
            far[box] = ndimage.distance_transform_edt(~avoid[box], sampling=spacing)
        return cls(image, name, lung, depth, far)

    def candidates(self, radius_mm: float, box_mm: float, avoid_margin_mm: float = 15.0) -> dict[str, np.ndarray]:
        """Voxel indices (N, 3) where a lesion reaching ``radius_mm`` from its centre may go: "parenchyma" (wholly
        inside the lung, 3 mm from its border) or "pleura" (inside the lung, touching its border); ``avoid_margin_mm``
        beyond its reach from the host's tumour, and with the whole ``box_mm`` box inside the scan (no invented air
        beyond the scan's first or last slice)."""
        spacing = np.array(self.image.GetSpacing()[::-1])
        half = np.ceil(box_mm / 2.0 / spacing).astype(int)
        allowed = np.zeros_like(self.lung)
        inner = tuple(slice(h, n - h) for h, n in zip(half, self.lung.shape))
        allowed[inner] = self.lung[inner]
        if self.avoid_mm is not None:
            allowed &= self.avoid_mm > radius_mm + avoid_margin_mm
        return {"parenchyma": np.argwhere(allowed & (self.depth_mm >= radius_mm + 3.0)),
                "pleura": np.argwhere(allowed & (self.depth_mm >= 0.5 * radius_mm)
                                      & (self.depth_mm <= max(radius_mm, 1.5)))}


def _resample(image, reference, order: int, default: float):
    import SimpleITK as sitk

    interpolator = {0: sitk.sitkNearestNeighbor, 1: sitk.sitkLinear}[order]
    return sitk.Resample(image, reference, sitk.Transform(), interpolator, default, sitk.sitkFloat32)


def _array(image) -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(image)


def paste_lesion(target: Host, lesion_image, lesion_mask, rng: np.random.Generator, box_mm: float = 80.0,
                 scale_range: tuple[float, float] = (0.8, 1.25), pleura_share: float = 0.3,
                 fine_grid_share: float = 0.5):
    """(image, mask, placement) of the ``box_mm`` box around one lesion (SimpleITK images: HU, mask) pasted into
    ``target``, or None when its lungs leave no room for a lesion that size."""
    import SimpleITK as sitk
    from scipy import ndimage

    host = target.image
    host_spacing = np.array(host.GetSpacing()[::-1], float)
    lesion_spacing = np.array(lesion_image.GetSpacing()[::-1], float)
    lesion_hu = _array(lesion_image).astype(np.float32)
    lesion_bin = _array(lesion_mask) > 0
    scale = float(rng.uniform(*scale_range))
    radius = lesion_radius_mm(lesion_bin, lesion_spacing) * scale
    candidates = target.candidates(radius, box_mm)
    kinds = [k for k in ("pleura", "parenchyma") if len(candidates[k])]
    if not kinds:
        return None
    kind = "pleura" if "pleura" in kinds and (rng.random() < pleura_share or kinds == ["pleura"]) else kinds[-1]
    centre = candidates[kind][rng.integers(len(candidates[kind]))]
    fine = bool(rng.random() < fine_grid_share) and lesion_spacing[0] * scale < host_spacing[0]

    # The output grid: the host's (or its in-plane grid with the lesion's slices) over box_mm around the centre.
    direction = np.array(host.GetDirection()).reshape(3, 3)
    centre_point = np.array(host.TransformIndexToPhysicalPoint([int(c) for c in centre[::-1]]))
    out_spacing = host_spacing.copy()
    if fine:
        out_spacing[0] = max(lesion_spacing[0] * scale, 0.5)
    # an even number of voxels puts the box's corner on a host voxel (not half a voxel off, which would blur the
    # whole box by interpolation: a rectangle a network could learn to find)
    size_xyz = [2 * max(1, int(round(box_mm / s / 2))) for s in out_spacing[::-1]]
    origin = centre_point - direction @ (np.asarray(size_xyz) / 2.0 * out_spacing[::-1])
    reference = sitk.Image(size_xyz, sitk.sitkFloat32)
    reference.SetSpacing(tuple(out_spacing[::-1]))
    reference.SetDirection(host.GetDirection())
    reference.SetOrigin(tuple(origin))
    region = _array(_resample(host, reference, 1, -1024.0))

    # The lesion: scaled, in the host's orientation, its mask's centre on the chosen point; on the host's own grid
    # it is first blurred along z to the host's slice thickness (FWHM = slice spacing).
    array = lesion_hu
    if not fine and host_spacing[0] > lesion_spacing[0] * scale:
        sigma_mm = np.sqrt(host_spacing[0] ** 2 - (lesion_spacing[0] * scale) ** 2) / 2.355
        array = ndimage.gaussian_filter1d(array, sigma_mm / (lesion_spacing[0] * scale), axis=0, mode="nearest")
    placed_spacing = lesion_spacing * scale
    middle = np.argwhere(lesion_bin).mean(0)
    moved_origin = centre_point - direction @ (middle[::-1] * placed_spacing[::-1])

    def placed(values: np.ndarray):
        image = sitk.GetImageFromArray(values.astype(np.float32))
        image.SetSpacing(tuple(placed_spacing[::-1]))
        image.SetDirection(host.GetDirection())
        image.SetOrigin(tuple(moved_origin))
        return image

    lesion_values = _array(_resample(placed(array), reference, 1, 0.0))
    mask = _array(_resample(placed(lesion_bin.astype(np.float32)), reference, 1, 0.0)) > 0.5
    support = _array(_resample(placed(np.ones_like(array)), reference, 0, 0.0)) > 0.5
    outside = ndimage.distance_transform_edt(~mask, sampling=out_spacing)
    alpha = np.clip(1.0 - (outside - KEEP_MM) / FADE_MM, 0.0, 1.0) * support
    # the lesion's own surroundings (lung air) replace only the host's lung: where the lesion touches the pleura,
    # heart or diaphragm, pasting them there would carve a dark ring into soft tissue (a cue "lesion here")
    lung = sitk.GetImageFromArray(target.lung.astype(np.float32))
    lung.CopyInformation(host)
    alpha = np.where(mask, alpha, alpha * _array(_resample(lung, reference, 1, 0.0)))
    image = alpha * lesion_values + (1.0 - alpha) * region

    def to_image(values: np.ndarray, pixel):
        result = sitk.GetImageFromArray(values)
        result.CopyInformation(reference)
        return sitk.Cast(result, pixel)

    return (to_image(np.round(image).astype(np.int16), sitk.sitkInt16),
            to_image(mask.astype(np.uint8), sitk.sitkUInt8),
            PastePlacement(tuple(int(c) for c in centre), kind, scale, fine))
