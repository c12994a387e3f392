"""Training augmentation close to nnU-Net's default, built from MONAI transforms.

nnU-Net (probabilities per sample): rotation and scaling (p 0.2 each; +-30 degrees in 3D, in-plane +-180 degrees
for thin patches, scale 0.7-1.4) on an enlarged patch cropped back (``spatial_augmentation``), optional elastic
deformation, Gaussian noise (p 0.1), Gaussian blur (p 0.2, sigma 0.5-1), brightness
(multiplicative 0.75-1.25, p 0.15), contrast (0.75-1.25 around the mean, p 0.15), low-resolution
simulation (zoom 0.5-1, p 0.25), gamma (0.7-1.5, p 0.3, and inverted p 0.1), mirroring on every axis.
Without a ``SpatialPlan`` the older in-patch variant runs instead: MONAI's ``RandAffined`` on the patch itself
(+-30 degrees about every axis, p 0.2 for rotation and scaling together, zero-padded corners); it stays for
comparison (``diffumamba train --spatial-aug in-patch``).
Images are interpolated linearly, labels by nearest neighbour, so label values never change.
"""

from __future__ import annotations

import math

__all__ = ["training_transforms"]


def training_transforms(spatial_dims: int = 3, elastic: bool = False, seed: int = 0, prior_key: bool = False,
                        plan=None):
    """A MONAI ``Compose`` over a dict with "image" (C, *spatial) and "label" (1, *spatial) tensors, and with
    ``prior_key`` a "prior" (1, *spatial) GTV channel that follows the spatial transforms only.

    ``plan``: a ``spatial_augmentation.SpatialPlan``; the inputs are then its sampling box and the outputs its
    patch. None: rotation and scaling act on the patch itself (the in-patch variant)."""
    from monai import transforms as T

    keys = ["image", "prior", "label"] if prior_key else ["image", "label"]
    modes = ("bilinear",) * (len(keys) - 1) + ("nearest",)
    if plan is not None:
        from .spatial_augmentation import RandRotateScaleCropd

        steps = [RandRotateScaleCropd(keys, modes, plan)]
    else:
        angle = math.radians(30) if spatial_dims == 3 else math.pi
        rotate = (angle,) * (3 if spatial_dims == 3 else 1)
        steps = [T.RandAffined(keys, prob=0.2, rotate_range=rotate, scale_range=(0.3,) * spatial_dims,
                               mode=modes, padding_mode="zeros")]
    if elastic:
        elastic_class = T.Rand3DElasticd if spatial_dims == 3 else T.Rand2DElasticd
        kwargs = {"sigma_range": (9, 13), "magnitude_range": (0, 200)} if spatial_dims == 3 else \
            {"spacing": (20, 20), "magnitude_range": (0, 2)}
        steps.append(elastic_class(keys, prob=0.2, mode=modes, padding_mode="zeros", **kwargs))
    steps += [
        T.RandGaussianNoised("image", prob=0.1, std=0.1),
        T.RandGaussianSmoothd("image", prob=0.2, sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.5, 1.0)),
        T.RandScaleIntensityd("image", prob=0.15, factors=0.25),
        T.RandScaleIntensityFixedMeand("image", prob=0.15, factors=0.25, preserve_range=True),
        T.RandSimulateLowResolutiond("image", prob=0.25, zoom_range=(0.5, 1.0)),
        T.RandAdjustContrastd("image", prob=0.1, gamma=(0.7, 1.5), invert_image=True, retain_stats=True),
        T.RandAdjustContrastd("image", prob=0.3, gamma=(0.7, 1.5), retain_stats=True),
    ]
    steps += [T.RandFlipd(keys, prob=0.5, spatial_axis=axis) for axis in range(spatial_dims)]
    compose = T.Compose(steps)
    compose.set_random_state(seed=seed)
    return compose
