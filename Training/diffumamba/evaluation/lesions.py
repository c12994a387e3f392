"""Lesion-level figures of a full-CT prediction: which tumours it found, and how much it marked elsewhere.

A voxel Dice over the whole CT mixes two failures a clinician tells apart at a glance: a tumour missed, and
tissue marked that is no tumour at all. ``lesion_detection`` counts each reference component of at least
``min_ml`` as found when the prediction covers at least ``min_overlap`` of it; ``false_positive_ml`` is the
predicted volume outside the reference; ``pieces`` counts the prediction's separate parts as the Slicer module's
result check does (26-connected, 1 ml or more).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["components", "lesion_detection", "false_positive_ml", "pieces"]


def components(mask: np.ndarray):
    """(labels, count) of a mask's 26-connected pieces (corner neighbours are one piece)."""
    from scipy import ndimage

    return ndimage.label(mask, structure=np.ones((3,) * mask.ndim, bool))


def lesion_detection(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], min_ml: float = 5.0,
                     min_overlap: float = 0.5) -> list[dict]:
    """One row per reference component of ``min_ml`` or more: its volume (ml), the share the prediction covers,
    and whether that share reaches ``min_overlap``."""
    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    labels, count = components(ref)
    if not count:
        return []
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    hits = np.bincount(labels[pred].ravel(), minlength=count + 1)
    rows = []
    for k in range(1, count + 1):
        volume = sizes[k] * voxel_ml
        if volume >= min_ml:
            covered = hits[k] / sizes[k]
            rows.append({"volume_ml": float(volume), "covered": float(covered), "detected": bool(covered >= min_overlap)})
    return sorted(rows, key=lambda row: -row["volume_ml"])


def false_positive_ml(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> float:
    return float(np.logical_and(np.asarray(pred, bool), ~np.asarray(ref, bool)).sum() * np.prod(spacing) / 1000.0)


def pieces(mask: np.ndarray, spacing: Sequence[float], min_ml: float = 1.0) -> int:
    labels, count = components(np.asarray(mask, bool))
    if not count:
        return 0
    sizes = np.bincount(labels.ravel())[1:] * float(np.prod(spacing)) / 1000.0
    return int((sizes >= min_ml).sum())
