"""Dataset fingerprint: what planning needs to know about the data, computed once.

As in nnU-Net: per case the voxel spacing and the shape after cropping to the non-zero region; per
channel the intensity statistics of foreground (labelled) voxels, from a seeded sample of up to
10,000 voxels per case, which CT normalisation clips and standardises with. Axes are in numpy order
(z, y, x) throughout the package.
"""

from __future__ import annotations

import hashlib
import json
from typing import Callable, Iterable, Optional

import numpy as np

from ..geometry import grid_differences
from ..imageio import read_scalar_image
from .dataset import Case, RawDataset, check_finite

__all__ = ["read_case", "nonzero_bbox", "compute_fingerprint", "fingerprint_hash"]

SAMPLES_PER_CASE = 10_000


def read_case(case: Case):
    """Channels stacked as (C, z, y, x) float32, label (z, y, x) int16 or None, spacing (z, y, x), and the
    SimpleITK image of channel 0 (its geometry). Refuses channels or labels on different grids."""
    import SimpleITK as sitk

    def read(path, hint):
        try:
            return read_scalar_image(path, hint)
        except ValueError as err:
            raise ValueError(f"{case.name}: {err}") from None

    images = [read(path, "give one file per channel") for path in case.images]
    label_image = read(case.label, "expected a single-component label map") if case.label is not None else None
    reference = images[0]
    for other, path in [*zip(images[1:], case.images[1:]), *([(label_image, case.label)] if label_image else [])]:
        problems = grid_differences(other, reference)
        if problems:
            raise ValueError(f"{case.name}: {path.name} is not on the grid of {case.images[0].name}: "
                             + "; ".join(problems))
    data = np.stack([check_finite(sitk.GetArrayFromImage(image).astype(np.float32), path)
                     for image, path in zip(images, case.images)])
    label = sitk.GetArrayFromImage(label_image).astype(np.int16) if label_image is not None else None
    return data, label, tuple(reversed(reference.GetSpacing())), reference


def nonzero_bbox(data: np.ndarray) -> tuple[slice, ...]:
    """Bounding box of voxels non-zero in any channel (nnU-Net's crop; the whole image if all zero)."""
    mask = np.any(data != 0, axis=0)
    if not mask.any():
        return tuple(slice(0, n) for n in mask.shape)
    slices = []
    for axis in range(mask.ndim):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        slices.append(slice(int(present[0]), int(present[-1]) + 1))
    return tuple(slices)


def compute_fingerprint(dataset: RawDataset, cases: Optional[list[Case]] = None, seed: int = 1234,
                        progress: Optional[Callable[[Iterable], Iterable]] = None) -> dict:
    cases = cases if cases is not None else dataset.training_cases()
    rng = np.random.default_rng(seed)
    spacings, shapes, samples = [], [], [[] for _ in range(dataset.num_channels)]
    for case in (progress(cases) if progress else cases):
        data, label, spacing, _ = read_case(case)
        box = nonzero_bbox(data)
        spacings.append([float(s) for s in spacing])
        shapes.append([s.stop - s.start for s in box])
        foreground = label > 0 if label is not None else np.ones(data.shape[1:], bool)
        for channel in range(dataset.num_channels):
            values = data[channel][foreground]
            if values.size:
                samples[channel].append(rng.choice(values, min(SAMPLES_PER_CASE, values.size), replace=False))
    intensities = []
    for channel, parts in enumerate(samples):
        if not parts:
            raise ValueError(f"no foreground voxels in any case: cannot compute intensity statistics of channel {channel}")
        values = np.concatenate(parts).astype(np.float64)
        intensities.append({"mean": float(values.mean()), "std": float(values.std()),
                            "median": float(np.median(values)), "min": float(values.min()),
                            "max": float(values.max()), "percentile_00_5": float(np.percentile(values, 0.5)),
                            "percentile_99_5": float(np.percentile(values, 99.5))})
    return {"channel_names": dataset.channel_names, "labels": dataset.labels, "cases": [c.name for c in cases],
            "spacings": spacings, "shapes_after_crop": shapes, "foreground_intensities": intensities,
            "seed": seed}


def fingerprint_hash(fingerprint: dict) -> str:
    """SHA-256 of the canonical JSON: recorded in checkpoints as the data's provenance."""
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()
