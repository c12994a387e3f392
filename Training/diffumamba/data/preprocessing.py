"""Case preprocessing as nnU-Net does it, and its exact inverse for predictions.

crop to the non-zero region -> resample to the plan's target spacing -> normalise; and back: a
prediction on the preprocessed grid is resampled to the cropped shape and pasted into an array of the
original shape, so it lies exactly on the input grid (the caller copies the input's geometry onto it).

Resampling keeps the voxel *boxes* aligned (like ``skimage.transform.resize``, which nnU-Net uses): the
first and last voxel edges of both grids coincide, so resampling there and back does not drift.
Images use cubic B-spline (linear along an axis of 2 voxels: see ``resample_array``) or linear interpolation,
label maps nearest neighbour or linear interpolation of each label's mask followed by argmax (smoother
boundaries at large zoom factors).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .dataset import check_finite, nonfinite_count
from .fingerprint import nonzero_bbox

__all__ = ["CaseProperties", "ResamplingError", "resampled_shape", "resample_array", "resample_image", "slice_axis",
           "resample_labels", "normalise", "preprocess_case", "restore_to_original"]


@dataclass
class CaseProperties:
    """What ``restore_to_original`` needs to undo the preprocessing of one case."""

    original_shape: tuple[int, ...]
    original_spacing: tuple[float, ...]
    bbox: tuple[tuple[int, int], ...]
    cropped_shape: tuple[int, ...]

    def to_dict(self) -> dict:
        return {"original_shape": list(self.original_shape), "original_spacing": list(self.original_spacing),
                "bbox": [list(b) for b in self.bbox], "cropped_shape": list(self.cropped_shape)}

    @classmethod
    def from_dict(cls, d: dict) -> "CaseProperties":
        return cls(tuple(d["original_shape"]), tuple(d["original_spacing"]), tuple(tuple(b) for b in d["bbox"]),
                   tuple(d["cropped_shape"]))


def resampled_shape(shape: Sequence[int], spacing: Sequence[float], target_spacing: Sequence[float]) -> tuple[int, ...]:
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target_spacing))


class ResamplingError(ValueError):
    """Resampling turned finite values into NaN/Inf: a defect of the interpolation, never of the image."""


def resample_array(array: np.ndarray, new_shape: Sequence[int], order: int = 3) -> np.ndarray:
    """Resample a (z, y, x) or (y, x) array to ``new_shape`` with box-aligned grids.

    ``order``: 0 nearest, 1 linear, 3 cubic B-spline. Cubic interpolation is not used along an axis of 2 voxels:
    ITK's B-spline interpolator (sitkBSpline) mirrors an index of its 4-voxel support only once, so on such an axis
    the index 3 (needed from the continuous index 1 on, i.e. in the last quarter of the box) becomes -1 and reads
    memory outside the coefficients. Measured with SimpleITK 2.5.7 against scipy's mirrored B-spline: axes of 1, 3
    and more voxels agree to 1e-7, an axis of 2 voxels gives wrong values (off by 0.03 on unit noise, and at
    random, between runs, values near 3e38 or NaN: 37 of LIDC's 993 nodule crops have 2 slices). Such an axis is
    resampled linearly, after cubic interpolation within each of its slices (linearly everywhere if fewer than
    two axes are longer); any other shape is resampled as before.

    Raises ResamplingError if finite values come out as NaN/Inf (the shapes are in the message).
    """
    new_shape = tuple(int(n) for n in new_shape)
    if tuple(array.shape) == new_shape:
        return array.copy()
    short = [axis for axis, n in enumerate(array.shape) if n == 2]
    if order == 3 and short:
        if array.ndim - len(short) < 2:
            return resample_array(array, new_shape, order=1)
        axis = short[0]
        in_plane = [n for a, n in enumerate(new_shape) if a != axis]
        slices = np.stack([resample_array(plane, in_plane, order=3) for plane in np.moveaxis(array, axis, 0)], axis)
        return resample_array(slices, new_shape, order=1)
    resampled = _resample(array, new_shape, order)
    bad = nonfinite_count(resampled)
    if bad and not nonfinite_count(array):
        kind = {0: "nearest-neighbour", 1: "linear", 3: "cubic B-spline"}[order]
        raise ResamplingError(f"{kind} resampling of a {' x '.join(map(str, array.shape))} array to "
                              f"{' x '.join(map(str, new_shape))} made {bad} NaN/Inf values from finite ones: a defect "
                              "of the resampling; please report it with these shapes")
    return resampled


def _resample(array: np.ndarray, new_shape: tuple[int, ...], order: int) -> np.ndarray:
    import SimpleITK as sitk

    interpolator = {0: sitk.sitkNearestNeighbor, 1: sitk.sitkLinear, 3: sitk.sitkBSpline}[order]
    source = sitk.GetImageFromArray(array.astype(np.float32, copy=False))
    # Source voxels are unit boxes; target voxels subdivide the same extent.
    spacing = [n_old / n_new for n_old, n_new in zip(reversed(array.shape), reversed(new_shape))]
    origin = [(s - 1.0) / 2.0 for s in spacing]
    resampled = sitk.Resample(source, list(reversed(new_shape)), sitk.Transform(), interpolator, origin, spacing,
                              source.GetDirection(), 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(resampled)


ANISOTROPY = 3.0   # nnU-Net's ANISO_THRESHOLD


def slice_axis(spacing: Sequence[float], target_spacing: Sequence[float]) -> int | None:
    """nnU-Net's choice of a separately resampled axis: the one coarsest axis of the source spacing if it is more
    than 3x the finest, else of the target spacing; None when neither is anisotropic or two axes tie."""
    for candidate in (spacing, target_spacing):
        values = np.asarray(candidate, dtype=float)
        if values.max() / values.min() > ANISOTROPY:
            coarse = np.flatnonzero(values == values.max())
            return int(coarse[0]) if len(coarse) == 1 else None
    return None


def resample_image(array: np.ndarray, new_shape: Sequence[int], order: int, axis: int | None = None,
                   axis_order: int = 0) -> np.ndarray:
    """``resample_array``, or with ``axis`` nnU-Net's anisotropic resampling: within each slice with ``order``, then
    along ``axis`` with ``axis_order`` (nnU-Net: nearest neighbour), so thick slices are not blended by a spline."""
    if axis is None or array.shape[axis] == new_shape[axis]:
        return resample_array(array, new_shape, order)
    in_plane = list(new_shape)
    in_plane[axis] = array.shape[axis]
    resampled = resample_array(array, in_plane, order)
    if axis_order != 0:
        return resample_array(resampled, new_shape, axis_order)
    # Nearest slice, computed exactly as nnU-Net's map_coordinates(order=0): centre-aligned source coordinate
    # scale * (i + 0.5) - 0.5, rounded by floor(c + 0.5). A scale like 2/3 puts every third coordinate on a tie,
    # which any other rounding (ITK's included) breaks the other way, taking the neighbouring slice.
    scale = float(array.shape[axis]) / new_shape[axis]
    source = np.floor(scale * (np.arange(new_shape[axis]) + 0.5) - 0.5 + 0.5).astype(int)
    return np.take(resampled, np.clip(source, 0, array.shape[axis] - 1), axis=axis)


def resample_labels(labels: np.ndarray, new_shape: Sequence[int], linear: bool = False) -> np.ndarray:
    """Resample an integer label map: nearest neighbour, or linear on each label's mask then argmax."""
    if not linear:
        return np.rint(resample_array(labels, new_shape, order=0)).astype(labels.dtype)
    values = np.unique(labels)
    scores = np.stack([resample_array((labels == v).astype(np.float32), new_shape, order=1) for v in values])
    return values[np.argmax(scores, axis=0)].astype(labels.dtype)


def normalise(data: np.ndarray, channel_names: Sequence[str], intensities: Sequence[dict]) -> np.ndarray:
    """CT channels: clip to the dataset's foreground 0.5-99.5 percentiles, then z-score with the foreground
    mean and sd (comparable HU across scanners). "noNorm" channels (nnU-Net's name; e.g. a prior GTV mask)
    stay as they are. Other channels: per-image z-score (MR has no units)."""
    out = np.empty_like(data, dtype=np.float32)
    for c, (name, stats) in enumerate(zip(channel_names, intensities)):
        if name.upper() == "CT" and not all(np.isfinite(float(stats[k])) for k in
                                            ("percentile_00_5", "percentile_99_5", "mean", "std")):
            raise ValueError(f"the plan's intensity statistics of channel {c} ({name}) are NaN/Inf: they were computed "
                             "from an image with NaN/Inf voxels; delete fingerprint.json in the --preprocessed folder "
                             "and preprocess again (fixed images, or --replace-nonfinite)")
        if name == "noNorm":
            out[c] = data[c]
        elif name.upper() == "CT":
            clipped = np.clip(data[c], stats["percentile_00_5"], stats["percentile_99_5"])
            out[c] = (clipped - stats["mean"]) / max(stats["std"], 1e-8)
        else:
            out[c] = (data[c] - data[c].mean()) / max(float(data[c].std()), 1e-8)
    return out


def preprocess_case(data: np.ndarray, label: np.ndarray | None, spacing: Sequence[float],
                    target_spacing: Sequence[float], channel_names: Sequence[str], intensities: Sequence[dict],
                    image_order: int = 3, linear_labels: bool = False, source: str = "the image",
                    separate_z_order: int | None = None):
    """Crop, resample and normalise one case. Returns (data, label or None, CaseProperties).

    ``separate_z_order``: resample the slice axis of anisotropic data separately with this order, as nnU-Net does
    (``slice_axis``; models imported from nnU-Net), instead of with ``image_order`` like the other axes.

    NaN/Inf voxels are refused (``source`` names the file in the error), or replaced inside
    ``dataset.replacing_nonfinite``: one of them would spread through resampling and normalisation. A NaN/Inf
    that preprocessing itself makes is refused too (ValueError naming ``source``), so no cache holds one."""
    data = check_finite(data, source)
    box = nonzero_bbox(data)
    cropped = data[(slice(None), *box)]
    properties = CaseProperties(tuple(data.shape[1:]), tuple(float(s) for s in spacing),
                                tuple((s.start, s.stop) for s in box), tuple(cropped.shape[1:]))
    shape = resampled_shape(cropped.shape[1:], spacing, target_spacing)
    # Normalise before resampling, as nnU-Net does, so CT clipping happens on the original HU values.
    normalised = normalise(cropped, channel_names, intensities)
    axis = slice_axis(spacing, target_spacing) if separate_z_order is not None else None
    try:
        resampled = np.stack([resample_image(channel, shape, image_order, axis, separate_z_order or 0)
                              for channel in normalised])
    except ResamplingError as err:
        raise ValueError(f"{source}: {err}") from None
    bad = nonfinite_count(resampled)
    if bad:
        raise ValueError(f"{source}: preprocessing made {bad} NaN/Inf values from finite voxels (values beyond "
                         "float32's range?); check the image's values")
    out_label = None
    if label is not None:
        out_label = resample_labels(label[box], shape, linear_labels)
    return resampled, out_label, properties


def restore_to_original(prediction: np.ndarray, properties: CaseProperties, is_label: bool = True,
                        linear_labels: bool = False) -> np.ndarray:
    """Map a prediction on the preprocessed grid back to the original array shape (zeros outside the crop).

    ``prediction``: a label map (z, y, x) when ``is_label``, else per-class scores (C, z, y, x).
    """
    target = properties.cropped_shape
    if is_label:
        restored = resample_labels(prediction, target, linear_labels)
        full = np.zeros(properties.original_shape, dtype=prediction.dtype)
        full[tuple(slice(a, b) for a, b in properties.bbox)] = restored
        return full
    restored = np.stack([resample_array(channel, target, order=1) for channel in prediction])
    full = np.zeros((prediction.shape[0], *properties.original_shape), dtype=np.float32)
    full[(slice(None), *[slice(a, b) for a, b in properties.bbox])] = restored
    return full
