"""nnU-Net's rotation and scaling: drawn on an enlarged patch, then cropped to the training patch.

Rotating or shrinking the training patch itself pulls in zeros at its corners (a 30 degree tilt of a 20 x 64 x 64
brain patch leaves about a quarter of it empty and labelled background), so nnU-Net samples a larger box around
the same centre, transforms it and keeps the centre. For thin patches (largest side more than 3 times the first)
it rotates in-plane only, by up to 180 degrees, and never scales along the thin axis ("dummy 2D"
augmentation), since tilting a slab of few slices would mostly show padding. Rotation (each axis by up to
+-30 degrees, p 0.2) and scaling (one factor for all axes, 0.7-1.4, p 0.2) fire independently, as in nnU-Net v2's
``SpatialTransform``. Images (and the prior GTV channel) are interpolated linearly, labels by nearest neighbour,
through MONAI's ``Affine``; a box that is neither rotated nor scaled is a plain centre crop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from monai.transforms import Affine, MapTransform, Randomizable

__all__ = ["ANISOTROPY_THRESHOLD", "SpatialPlan", "spatial_plan", "RandRotateScaleCropd"]

ANISOTROPY_THRESHOLD = 3.0          # nnU-Net's ANISO_THRESHOLD
SCALE_RANGE = (0.7, 1.4)
PROBABILITY = 0.2


@dataclass(frozen=True)
class SpatialPlan:
    """Where rotation and scaling may go for one patch size.

    Attributes:
        patch_size: the training patch the network sees.
        sampling_size: the box the sampler crops before the transform (``patch_size`` + 2 x margin).
        rotation: the largest angle (radians) about each spatial axis; 0 where that axis never rotates.
        scaled_axes: axes the scale factor applies to (all but the thin one for in-plane plans).
        in_plane: True for nnU-Net's dummy-2D plans (thin patches).
    """

    patch_size: tuple[int, ...]
    sampling_size: tuple[int, ...]
    rotation: tuple[float, ...]
    scaled_axes: tuple[int, ...]
    in_plane: bool

    @property
    def margin(self) -> tuple[int, ...]:
        return tuple((s - p) // 2 for s, p in zip(self.sampling_size, self.patch_size))


def spatial_plan(patch_size: Sequence[int], enlarged: bool = True) -> SpatialPlan:
    """nnU-Net's ``configure_rotation_dummyDA_mirroring_and_inital_patch_size`` for ``patch_size``.

    ``enlarged=False`` keeps the sampling box at the patch size (the transform then pads corners with zeros).
    """
    patch = tuple(int(p) for p in patch_size)
    dims = len(patch)
    if dims == 2:
        in_plane = False
        angle = math.pi if max(patch) / min(patch) <= 1.5 else math.radians(15)
        rotation, scaled = (angle,), (0, 1)
    elif dims == 3:
        in_plane = max(patch) / patch[0] > ANISOTROPY_THRESHOLD
        rotation = (math.pi, 0.0, 0.0) if in_plane else (math.radians(30),) * 3
        scaled = (1, 2) if in_plane else (0, 1, 2)
    else:
        raise ValueError(f"patches must be 2D or 3D, got {patch}")
    sampling = _initial_patch_size(patch, rotation, in_plane) if enlarged else patch
    return SpatialPlan(patch, sampling, rotation, scaled, in_plane)


def _initial_patch_size(patch: tuple[int, ...], rotation: tuple[float, ...], in_plane: bool) -> tuple[int, ...]:
    """nnU-Net's ``get_patch_size``: the patch-size vector rotated by the largest angle (capped at 90 degrees) about
    each axis in turn, the largest absolute extent kept per axis, divided by 0.85 (nnU-Net's own constant, though
    it scales by 0.7-1.4), the thin axis untouched for in-plane plans. It under-covers diagonal angles, so some
    rotated corners still reach past the box and are zero-padded, as in nnU-Net; it keeps the box, and the cost of
    cropping it, small. The box gets the patch's parity so its centre crop stays on the voxel grid."""
    vector = np.array(patch, float)
    shape = vector.copy()
    for axis, angle in enumerate(rotation):
        if angle:
            angle = min(angle, math.pi / 2)
            shape = np.maximum(shape, np.abs(vector @ _NNUNET_ROTATIONS[len(patch)][axis](angle)))
    shape = (shape / 0.85).astype(int)
    if in_plane:
        shape[0] = patch[0]
    box = [max(p, int(s)) for p, s in zip(patch, shape)]
    return tuple(b + (b - p) % 2 for b, p in zip(box, patch))


def _rotation(a: int, b: int, dims: int, sign: float):
    """The rotation in the (a, b) plane as nnU-Net's batchgenerators writes it (``sign`` picks its convention)."""
    def matrix(angle: float) -> np.ndarray:
        c, s = math.cos(angle), sign * math.sin(angle)
        r = np.eye(dims)
        r[a, a], r[a, b], r[b, a], r[b, b] = c, -s, s, c
        return r
    return matrix


_NNUNET_ROTATIONS = {2: [_rotation(0, 1, 2, 1.0)],
                     3: [_rotation(1, 2, 3, 1.0), _rotation(0, 2, 3, -1.0), _rotation(0, 1, 3, 1.0)]}


class RandRotateScaleCropd(Randomizable, MapTransform):
    """Rotate and scale (each with probability 0.2) the sampling box of ``plan`` and crop its centre to the patch.
    ``modes``: MONAI interpolation mode per key ("bilinear" for images, "nearest" for labels)."""

    def __init__(self, keys: Sequence[str], modes: Sequence[str], plan: SpatialPlan):
        MapTransform.__init__(self, keys)
        self.modes, self.plan = dict(zip(keys, modes)), plan
        self.angles: list[float] = []
        self.scale = 1.0

    def randomize(self, data=None) -> None:
        rotate = self.R.uniform() < PROBABILITY
        scale = self.R.uniform() < PROBABILITY
        self.angles = [float(self.R.uniform(-a, a)) if rotate and a else 0.0 for a in self.plan.rotation]
        self.scale = float(self.R.uniform(*SCALE_RANGE)) if scale else 1.0

    def __call__(self, data):
        self.randomize()
        out = dict(data)
        if not any(self.angles) and self.scale == 1.0:
            crop = tuple(slice(m, m + p) for m, p in zip(self.plan.margin, self.plan.patch_size))
            for key in self.key_iterator(out):
                out[key] = out[key][(slice(None), *crop)]
            return out
        dims = len(self.plan.patch_size)
        scales = [self.scale if axis in self.plan.scaled_axes else 1.0 for axis in range(dims)]
        affine = Affine(rotate_params=self.angles, scale_params=scales, spatial_size=self.plan.patch_size,
                        padding_mode="zeros", image_only=True)
        for key in self.key_iterator(out):
            out[key] = affine(out[key], mode=self.modes[key])
        return out
