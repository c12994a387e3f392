"""Where a full-CT lung tumour model must learn to say "background": the soft tissue around the lungs.

nnU-Net's sampler centres a third of the patches on tumour and places the rest anywhere in the volume. In a chest
CT "anywhere" is mostly air, fat and abdomen, so a model trained on five patients learns the tumour's intensity and
marks every organ that shares it: heart, mediastinum, chest wall. Two remedies, measured in
docs/lung_gtv_model.md:

- **hard negatives**: patches centred on soft tissue (-100 to 200 HU, which also takes in bone after the plan's
  clipping) inside the lungs' bounding box and at least 10 mm from any tumour: heart, great vessels, mediastinum,
  chest wall, diaphragm;
- **the lung region**: the other random patches centred inside the same lung box that ``predict --crop lungs``
  segments, so no training time goes to regions the model never sees at inference.

Both work on the preprocessed (clipped, z-scored) CT channel: HU are recovered from the plan's normalisation,
exact inside its clipping range, which is all the thresholds need.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np

from .sampling import MAX_LOCATIONS, TrainingCase

__all__ = ["SOFT_TISSUE_HU", "approximate_hu", "with_hard_negatives", "cases_for_sampling"]

SOFT_TISSUE_HU = (-100.0, 200.0)
TUMOUR_CLEARANCE_MM = 10.0


def approximate_hu(channel: np.ndarray, intensity: dict) -> np.ndarray:
    """HU of a CT channel z-scored with the plan's ``intensity`` (mean, std); values the plan clipped stay at the
    clipping bounds."""
    return channel * float(intensity["std"]) + float(intensity["mean"])


def with_hard_negatives(case: TrainingCase, intensity: dict, spacing: Sequence[float], seed: int = 0,
                        soft_tissue_hu: tuple[float, float] = SOFT_TISSUE_HU,
                        clearance_mm: float = TUMOUR_CLEARANCE_MM) -> TrainingCase:
    """``case`` with its lung box (``region``) and up to 10,000 hard-negative patch centres (``negatives``); a case
    without lungs (a crop, a phantom) keeps both unset and is sampled as before."""
    from scipy import ndimage

    from ..inference.lung_box import lung_box

    hu = approximate_hu(case.data[0], intensity)
    box = lung_box(hu, spacing)
    if box is None:
        return case
    inside = np.zeros(hu.shape, bool)
    inside[box] = True
    soft = inside & (hu >= soft_tissue_hu[0]) & (hu <= soft_tissue_hu[1])
    if case.label.any():
        far = ndimage.distance_transform_edt(case.label == 0, sampling=spacing) >= clearance_mm
        soft &= far
    where = np.argwhere(soft)
    if len(where) > MAX_LOCATIONS:
        where = where[np.random.default_rng(seed).choice(len(where), MAX_LOCATIONS, replace=False)]
    return replace(case, region=box, negatives=where if len(where) else None)




def cases_for_sampling(cases: Sequence[TrainingCase], hard_negative: float, lung_region: bool, plan,
                       seed: int = 0) -> list[TrainingCase]:
    """The training cases with lung boxes and hard negatives where the settings ask for them (``train`` and
    ``experiment`` alike), unchanged otherwise."""
    if not (hard_negative > 0 or lung_region):
        return list(cases)
    return [with_hard_negatives(c, plan.intensities[0], plan.target_spacing, seed) for c in cases]
