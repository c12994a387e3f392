"""Follow-up scans simulated from a single time point, with a known deformation.

They serve twice: as training pairs for the refinement network (real longitudinal pairs with masks
at both visits are rare), and as a registration benchmark whose true answer is known. From a scan and
its tumour mask:

1. the tumour grows or shrinks (a level set of its signed distance map, so the shape stays plausible):
   new tumour voxels take tumour intensities, vacated ones the intensities of the tissue around it;
2. a smooth random deformation (cubic B-spline, control points every ``mesh_mm``) with an optional
   breathing-like cranio-caudal component growing towards the feet, then a small rigid motion;
3. intensity scale and offset (another scanner, contrast timing) and Gaussian noise.

The follow-up lies on the input's grid; ``transform`` maps follow-up points to input (prior) points, the
same direction as a registration result, so ``warp_mask(prior_mask, followup, transform)`` is the truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SimulationSettings", "SimulatedFollowUp", "simulate_followup", "change_tumour_volume", "random_deformation"]


@dataclass
class SimulationSettings:
    """Ranges the random follow-up is drawn from (uniform unless stated).

    Attributes:
        volume_change: tumour volume ratio follow-up / prior (1, 1 for none).
        deformation_mm: standard deviation of the control-point displacements (clipped at 3 sd).
        mesh_mm: control-point spacing of the random deformation.
        breathing_mm: largest cranio-caudal shift, at the caudal end, growing linearly from 0 at the top.
        rotation_deg, shift_mm: rigid motion, per axis, +- the value.
        intensity_scale, intensity_offset: the follow-up's intensities are ``a * x + b``; the offset is in
            units of the image's robust range (1st-99th percentile).
        noise: Gaussian noise sd, in units of the robust range.
    """

    volume_change: tuple[float, float] = (0.5, 1.5)
    deformation_mm: float = 3.0
    mesh_mm: float = 60.0
    breathing_mm: float = 8.0
    rotation_deg: float = 3.0
    shift_mm: float = 10.0
    intensity_scale: tuple[float, float] = (0.95, 1.05)
    intensity_offset: float = 0.01
    noise: float = 0.01


@dataclass
class SimulatedFollowUp:
    image: object          # sitk.Image on the prior's grid
    mask: object           # sitk.Image uint8, the follow-up tumour (truth)
    transform: object      # follow-up points -> prior points
    volume_ratio: float    # follow-up / prior tumour volume


def change_tumour_volume(image, mask, ratio: float, rng: np.random.Generator, spacing=(1.0, 1.0, 1.0)):
    """(image, mask) numpy arrays with the tumour grown or shrunk to ``ratio`` times its volume
    (``spacing``: x, y, z in mm, so growth is isotropic in millimetres)."""
    from scipy import ndimage

    inside = mask > 0
    if not inside.any() or abs(ratio - 1) < 1e-3:
        return image.copy(), inside.astype(np.uint8)
    if ratio > 8:
        raise ValueError(f"a tumour volume ratio of {ratio} is beyond what the simulation models (at most 8)")
    # Work in the tumour's box plus half its extent (room for doubling the radius).
    where = np.argwhere(inside)
    low, high = where.min(0), where.max(0) + 1
    margin = (high - low) // 2 + 2
    box = tuple(slice(max(0, a - m), min(n, b + m)) for a, b, m, n in zip(low, high, margin, inside.shape))
    sampling = tuple(reversed([float(v) for v in spacing]))
    local = inside[box]
    signed = ndimage.distance_transform_edt(~local, sampling=sampling) - ndimage.distance_transform_edt(local, sampling=sampling)
    # Voxel distances tie in whole shells; break ties by distance from the centroid so the tumour grows and
    # shrinks roughly evenly, and take exactly the target number of voxels.
    centre = np.array(np.nonzero(local)).mean(1)
    grid = np.indices(local.shape, dtype=np.float32)
    radial = np.sqrt(sum(((grid[a] - centre[a]) * sampling[a]) ** 2 for a in range(3)))
    key = signed + 1e-3 * radial / max(float(radial.max()), 1e-6)
    target = max(1, min(int(round(local.sum() * ratio)), local.size))
    chosen = np.zeros(local.size, bool)
    chosen[np.argpartition(key.ravel(), target - 1)[:target]] = True
    new = np.zeros_like(inside)
    new[box] = chosen.reshape(local.shape)
    out = image.copy()
    tumour_values = image[inside]
    ring = ndimage.binary_dilation(inside, iterations=4) & ~ndimage.binary_dilation(inside, iterations=1)
    surround_values = image[ring] if ring.any() else image[~inside]
    grown, vacated = new & ~inside, inside & ~new
    out[grown] = rng.choice(tumour_values, int(grown.sum()))
    out[vacated] = rng.choice(surround_values, int(vacated.sum()))
    # Partial volume on the new tumour surface only, so the edge is not a give-away of the change while
    # the pasted interior keeps tumour (or surrounding tissue) values.
    edge = (new ^ ndimage.binary_erosion(new)) | (ndimage.binary_dilation(new) & ~new)
    changed = edge & ndimage.binary_dilation(grown | vacated)
    out[changed] = ndimage.gaussian_filter(out, 0.7)[changed]
    return out, new.astype(np.uint8)


def random_deformation(reference, settings: SimulationSettings, rng: np.random.Generator):
    """A random smooth transform over ``reference``'s domain (follow-up points -> prior points)."""
    import SimpleITK as sitk

    extent = [n * s for n, s in zip(reference.GetSize(), reference.GetSpacing())]
    mesh = [max(1, int(round(e / settings.mesh_mm))) for e in extent]
    bspline = sitk.BSplineTransformInitializer(reference, mesh, order=3)
    coefficients = bspline.GetCoefficientImages()
    shape = sitk.GetArrayViewFromImage(coefficients[0]).shape          # (z, y, x) control points
    sd = settings.deformation_mm
    displacement = np.clip(rng.normal(0, sd, (3, *shape)), -3 * sd, 3 * sd) if sd > 0 else np.zeros((3, *shape))
    if settings.breathing_mm:
        # Cranio-caudal component growing towards the feet: along the physical z axis (LPS: +z is head).
        grid = coefficients[0]
        indices = np.indices(shape).reshape(3, -1)[::-1].T            # (x, y, z) index per control point
        z = np.array([grid.TransformIndexToPhysicalPoint([int(i) for i in idx])[2] for idx in indices])
        top, bottom = z.max(), z.min()
        fraction = (top - z) / max(top - bottom, 1e-6)
        displacement[2] += (settings.breathing_mm * fraction).reshape(shape)
    parameters = np.concatenate([displacement[axis].ravel() for axis in range(3)])
    bspline.SetParameters([float(p) for p in parameters])
    rigid = sitk.Euler3DTransform()
    centre = reference.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in reference.GetSize()])
    rigid.SetCenter(centre)
    angles = np.radians(rng.uniform(-settings.rotation_deg, settings.rotation_deg, 3))
    rigid.SetRotation(*[float(a) for a in angles])
    rigid.SetTranslation([float(t) for t in rng.uniform(-settings.shift_mm, settings.shift_mm, 3)])
    return sitk.CompositeTransform([rigid, bspline])


def simulate_followup(image, mask, settings: SimulationSettings | None = None,
                      rng: np.random.Generator | int = 0) -> SimulatedFollowUp:
    """A simulated follow-up of (``image``, ``mask``), both SimpleITK images on one grid."""
    import SimpleITK as sitk

    from .warp import warp_image, warp_mask

    settings = settings or SimulationSettings()
    rng = np.random.default_rng(rng)
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    labels = sitk.GetArrayFromImage(mask) > 0
    ratio = float(rng.uniform(*settings.volume_change))
    changed, new_mask = change_tumour_volume(array, labels, ratio, rng, image.GetSpacing())
    low, high = np.percentile(array[::2, ::2, ::2], [1, 99])
    span = max(float(high - low), 1e-6)
    source = sitk.GetImageFromArray(changed)
    source.CopyInformation(image)
    source_mask = sitk.GetImageFromArray(new_mask)
    source_mask.CopyInformation(image)
    transform = random_deformation(image, settings, rng)
    warped = sitk.GetArrayFromImage(warp_image(source, image, transform, default=float(array.min())))
    scale = rng.uniform(*settings.intensity_scale)
    offset = rng.uniform(-settings.intensity_offset, settings.intensity_offset) * span
    warped = scale * warped + offset + rng.normal(0, settings.noise * span, warped.shape)
    followup = sitk.GetImageFromArray(warped.astype(np.float32))
    followup.CopyInformation(image)
    followup_mask = warp_mask(source_mask, image, transform)
    prior_voxels = max(int(labels.sum()), 1)
    volume_ratio = float(sitk.GetArrayViewFromImage(followup_mask).sum()) / prior_voxels
    return SimulatedFollowUp(followup, followup_mask, transform, volume_ratio)
