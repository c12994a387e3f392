"""Corrupted training labels, as another observer's contours differ from the reference: grown, shrunk, shifted, part
of the lesion missed, or an adjoining vessel taken in.

For experiments on noisy labels (DALE): a seeded fraction of the training cases gets one corruption each;
held-out cases are always scored against their own clean labels. Sizes are in voxels of the preprocessed grid.
Two noise models (``--label-noise``):

- ``contour``: dilation, erosion or an in-plane shift, all by ``--corrupt-voxels`` (issue 17's model);
- ``readers``: the errors readers make (issue 32): dilation or erosion by 1-3 voxels, an in-plane shift by 1-2,
  a missed part (a cap of 20-40 % of the lesion cut off by a plane, as a reader who stops a slice early or skips
  one side), or a merged vessel (the tissue attached to the lesion, grown into from its border for 2-5 voxels
  through voxels as dense as the lesion, as a threshold or grow tool takes in a touching vessel). The size is drawn
  per case and recorded with the kind (``"dilate:2"``), so a run's ``cases.json`` says exactly what each label got.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from scipy import ndimage

__all__ = ["KINDS", "NOISE_MODELS", "corrupt_label", "choose_corruptions", "parse_corruption", "dense_reach"]

KINDS = ("dilate", "erode", "shift", "miss", "vessel")
NOISE_MODELS = {"contour": ("dilate", "erode", "shift"), "readers": KINDS}
# Size ranges (voxels, inclusive) of the readers' model; "miss" and "vessel" draw their own extent.
READER_SIZES = {"dilate": (1, 3), "erode": (1, 3), "shift": (1, 2), "vessel": (2, 5)}


def parse_corruption(corruption: str, voxels: int) -> tuple[str, int]:
    """(kind, size) of a recorded corruption: ``"dilate:2"``, or a bare kind whose size is ``voxels``."""
    kind, _, size = corruption.partition(":")
    if kind not in KINDS:
        raise ValueError(f"unknown corruption {kind!r}; choose one of {', '.join(KINDS)}")
    size = int(size) if size else voxels
    if size < 1:
        raise ValueError("the corruption needs at least one voxel")
    return kind, size


def corrupt_label(label: np.ndarray, corruption: str, voxels: int, rng: np.random.Generator,
                  image: Optional[np.ndarray] = None) -> np.ndarray:
    """``label`` with every foreground class dilated, eroded (never to nothing: fewer steps if needed), shifted along
    a random in-plane direction (the last two axes, where contours are drawn), cut (``miss``) or grown into the
    attached dense tissue of ``image`` (``vessel``, which needs the image)."""
    kind, size = parse_corruption(corruption, voxels)
    if kind == "shift":
        angle = rng.uniform(0, 2 * np.pi)
        offset = [0] * (label.ndim - 2) + [int(round(size * np.sin(angle))), int(round(size * np.cos(angle)))]
        return ndimage.shift(label, offset, order=0, mode="constant", cval=0).astype(label.dtype)
    if kind == "vessel" and image is None:
        raise ValueError("a merged-vessel corruption needs the image")
    out = label.copy()
    structure = ndimage.generate_binary_structure(label.ndim, 1)
    for value in np.unique(label):
        if value == 0:
            continue
        mask = label == value
        if kind == "dilate":
            grown = ndimage.binary_dilation(mask, structure, iterations=size)
            out[grown & (label == 0)] = value
        elif kind == "erode":
            out[mask & ~_eroded(mask, structure, size)] = 0
        elif kind == "miss":
            out[_missed_part(mask, rng)] = 0
        else:
            out[_attached_tissue(mask, image, size, structure, rng) & (label == 0)] = value
    return out


def _eroded(mask: np.ndarray, structure: np.ndarray, steps: int) -> np.ndarray:
    for n in range(steps, 0, -1):                  # a lesion too small for one erosion step stays as it is
        candidate = ndimage.binary_erosion(mask, structure, iterations=n)
        if candidate.any():
            return candidate
    return mask


def _missed_part(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The voxels beyond a plane of random direction that leaves 60-80 % of the lesion (at least one voxel kept)."""
    points = np.argwhere(mask).astype(float)
    direction = rng.normal(size=mask.ndim)
    direction /= np.linalg.norm(direction)
    along = points @ direction
    cut = np.quantile(along, rng.uniform(0.6, 0.8))
    removed = np.zeros_like(mask)
    drop = along > cut
    if drop.all():
        drop[np.argmin(along)] = False
    removed[tuple(points[drop].astype(int).T)] = True
    return removed


def dense_reach(mask: np.ndarray, image: np.ndarray, depth: int, structure: np.ndarray) -> np.ndarray:
    """Voxels outside ``mask`` reached from it in ``depth`` steps through voxels at least as dense as the mask's
    10th percentile."""
    dense = image >= np.percentile(image[mask], 10)
    reached = mask.copy()
    for _ in range(depth):
        reached = ndimage.binary_dilation(reached, structure) & (dense | mask)
    return reached & ~mask


def _attached_tissue(mask: np.ndarray, image: np.ndarray, depth: int, structure: np.ndarray,
                     rng: np.random.Generator) -> np.ndarray:
    """Voxels reached from the lesion's border in ``depth`` steps through voxels at least as dense as the lesion's
    10th percentile: the vessels, fissures or pleura it touches. A lesion that touches nothing dense (a nodule
    surrounded by air) gets a vessel drawn instead: a 3-voxel-wide tube leaving it in a random in-plane direction for
    2 x depth voxels, so every corrupted case is corrupted."""
    added = dense_reach(mask, image, depth, structure)
    if added.sum() >= 3:
        return added
    centre = np.argwhere(mask).mean(0)
    angle = rng.uniform(0, 2 * np.pi)
    step = np.zeros(mask.ndim)
    step[-2:] = np.sin(angle), np.cos(angle)
    radius = np.max(np.abs((np.argwhere(mask) - centre) @ step)) if mask.any() else 0
    tube = np.zeros_like(mask)
    for t in np.arange(0, radius + 2 * depth + 1, 0.5):
        point = np.round(centre + t * step).astype(int)
        if np.all(point >= 0) and np.all(point < mask.shape):
            tube[tuple(point)] = True
    return ndimage.binary_dilation(tube, structure) & ~mask


def choose_corruptions(names: Sequence[str], fraction: float, seed: int, noise_model: str = "contour") -> dict[str, str]:
    """A seeded choice of round(fraction x n) cases, each with a corruption kind (cycling through the model's kinds in
    a seeded order, so a fraction large enough sees every kind); the readers' model also draws each size."""
    if not 0 <= fraction <= 1:
        raise ValueError("the corrupted fraction must be in [0, 1]")
    if noise_model not in NOISE_MODELS:
        raise ValueError(f"unknown label-noise model {noise_model!r}; choose one of {', '.join(NOISE_MODELS)}")
    count = int(round(fraction * len(names)))
    if count == 0:
        return {}
    rng = np.random.default_rng(seed)
    chosen = sorted(str(n) for n in rng.choice(sorted(names), count, replace=False))
    kinds = [str(k) for k in rng.permutation(NOISE_MODELS[noise_model])]
    corruptions = {}
    for i, name in enumerate(chosen):
        kind = kinds[i % len(kinds)]
        if noise_model == "readers" and kind in READER_SIZES:
            low, high = READER_SIZES[kind]
            kind = f"{kind}:{rng.integers(low, high + 1)}"
        corruptions[name] = kind
    return corruptions
