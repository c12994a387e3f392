"""A CT-like chest phantom with a lung tumour, for the demo and fast tests (no download needed).

Body: a soft-tissue ellipse (40 HU) in air (-1000 HU) with a denser rim (ribs, 300 HU); two lungs
(-850 HU) with a few vessels (40 HU); one lobulated tumour (30 HU) inside a lung; Gaussian noise (sd 25 HU) and a
slight blur. The label is the tumour. Its radius, 8-14 mm by default (a T1b-T1c NSCLC, about 1.6-2.8 cm across),
makes it a GTV rather than a nodule: at 5 mm (2 slices thick) a one-voxel boundary error costs 0.2 Dice, which
made the demo's score a matter of luck. Tumour and vessels differ by 10 HU, less than the noise: the network has to
tell a blob from a tube.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["make_phantom"]


def make_phantom(seed: int, shape=(40, 96, 96), spacing=(2.5, 1.5, 1.5),
                 tumour_radius_mm=(8.0, 14.0)) -> tuple[np.ndarray, np.ndarray]:
    """(CT in HU as int16, tumour label as uint8), arrays (z, y, x) on a grid of the given spacing (mm)."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(*[(np.arange(n) - n / 2) * s for n, s in zip(shape, spacing)], indexing="ij")
    body = (yy / 60) ** 2 + (xx / 68) ** 2 <= 1
    rim = body & ((yy / 54) ** 2 + (xx / 62) ** 2 > 1)
    side = rng.choice([-1, 1])
    lungs = [((yy + 5) / 40) ** 2 + ((xx - s * 30) / 24) ** 2 + (zz / 48) ** 2 <= 1 for s in (-1, 1)]
    image = np.full(shape, -1000.0)
    image[body] = 40
    image[rim] = 300
    for lung in lungs:
        image[lung] = -850
    for _ in range(6):                                   # vessels: thin tubes along z
        cy, cx = rng.uniform(-25, 15), side * rng.uniform(18, 42) * rng.choice([-1, 1])
        image[((yy - cy) ** 2 + (xx - cx) ** 2 <= 4) & (lungs[0] | lungs[1])] = 40
    lung = lungs[0] if side < 0 else lungs[1]
    inner = ndimage.binary_erosion(lung, iterations=8)
    candidates = np.argwhere(inner)
    centre = candidates[rng.integers(len(candidates))]
    radius = rng.uniform(*tumour_radius_mm)
    tumour = np.zeros(shape, bool)
    for _ in range(4):                                   # lobulated: a union of offset spheres
        offset = rng.normal(0, radius / 3, 3)
        r = radius * rng.uniform(0.6, 1.0)
        c = [(i - n / 2) * s + o for i, n, s, o in zip(centre, shape, spacing, offset)]
        tumour |= (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= r ** 2
    tumour &= lung
    image[tumour] = 30
    image = ndimage.gaussian_filter(image, 0.7) + rng.normal(0, 25, shape)
    return np.clip(image, -1024, 3071).astype(np.int16), tumour.astype(np.uint8)
