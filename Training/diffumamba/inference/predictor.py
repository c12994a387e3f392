"""Predict one image with one or more checkpoints, on exactly the image's grid.

Ensemble members (checkpoints, e.g. the folds of a cross-validation) and test-time mirrorings are
averaged as softmax probabilities on the preprocessed grid, as nnU-Net does; the consensus label map is
then mapped back onto the input grid. The optional uncertainty map is the fraction of members (network ×
mirroring) whose own label disagrees with the consensus: 0 where all agree, high where an edit is likely
needed.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..data.preprocessing import preprocess_case, restore_to_original
from .sliding_window import sliding_window_logits

__all__ = ["Prediction", "predict_case", "predict_in_box", "predict_label_map", "mirror_sets", "check_same_plan"]

PLAN_KEYS = ("target_spacing", "channel_names", "intensities", "image_order", "labels", "separate_z_order")


@dataclass
class Prediction:
    labels: np.ndarray                         # (z, y, x) integer label map on the input grid
    probabilities: Optional[np.ndarray] = None  # (classes, z, y, x) float32 on the input grid
    uncertainty: Optional[np.ndarray] = None    # (z, y, x) float32 in [0, 1] on the input grid


def mirror_sets(spatial_dims: int = 3) -> list[tuple[int, ...]]:
    """Every subset of the spatial axes to flip (the identity first): nnU-Net's mirroring TTA."""
    axes = range(spatial_dims)
    return [combo for r in range(spatial_dims + 1) for combo in itertools.combinations(axes, r)]


def check_same_plan(plans: Sequence[dict]) -> None:
    """Ensemble members must do the same job (a correction or propagation checkpoint takes other inputs than a
    segmentation one, though its plan may otherwise agree) and preprocess identically (same spacing, channels,
    normalisation, labels)."""
    tasks = [plan.get("task") or "segmentation" for plan in plans]
    for index, task in enumerate(tasks[1:], start=2):
        if task != tasks[0]:
            raise ValueError(f"checkpoint {index} is a {task} model, checkpoint 1 a {tasks[0]} model; ensemble or "
                             "package only checkpoints of one task")
    for index, plan in enumerate(plans[1:], start=2):
        different = [k for k in PLAN_KEYS if plan.get(k) != plans[0].get(k)]
        if different:
            raise ValueError(f"checkpoint {index} was trained with another preprocessing plan ({', '.join(different)} "
                             "differ); ensemble only checkpoints of one plan, e.g. the folds of one experiment")


def predict_case(networks: Sequence[nn.Module], plan: dict, data: np.ndarray, spacing, overlap: float = 0.5,
                 device: str | torch.device = "cpu", mirror: bool = False, probabilities: bool = False,
                 uncertainty: bool = False, progress: Optional[Callable[[str, float], None]] = None) -> Prediction:
    """Label map (and optional maps) for ``data`` (channels, z, y, x) in original units.

    ``plan`` is the checkpoints' plan (target spacing, channel names, intensity statistics, patch size);
    ``progress(stage, fraction)`` is called after each member.
    """
    processed, _, properties = preprocess_case(data, None, spacing, plan["target_spacing"], plan["channel_names"],
                                               plan["intensities"], plan.get("image_order", 3),
                                               separate_z_order=plan.get("separate_z_order"))
    flips = mirror_sets(processed.ndim - 1) if mirror else [()]
    members = [(network, flip) for network in networks for flip in flips]
    total, votes = None, []
    for index, (network, flip) in enumerate(members):
        flipped = np.flip(processed, tuple(a + 1 for a in flip)) if flip else processed
        logits = sliding_window_logits(network, np.ascontiguousarray(flipped), plan["patch_size"], overlap, device)
        if flip:
            logits = torch.flip(logits, [a + 1 for a in flip])
        softmax = torch.softmax(logits.float(), 0)
        total = softmax if total is None else total.add_(softmax)
        if uncertainty:
            votes.append(softmax.argmax(0).to(torch.uint8))
        if progress:
            progress("predict", (index + 1) / len(members))
    mean = total / len(members)
    consensus = mean.argmax(0)
    result = Prediction(restore_to_original(consensus.numpy().astype(np.int16), properties))
    if probabilities:
        result.probabilities = restore_to_original(mean.numpy(), properties, is_label=False)
    if uncertainty:
        disagreement = torch.stack([vote != consensus for vote in votes]).float().mean(0).numpy()
        result.uncertainty = restore_to_original(disagreement[None], properties, is_label=False)[0]
    return result


def predict_in_box(box: Optional[tuple], data: np.ndarray, **kwargs) -> Prediction:
    """``predict_case`` on ``data[:, box]`` only, pasted into the full grid (background outside the box)."""
    if box is None:
        return predict_case(data=data, **kwargs)
    inner = predict_case(data=np.ascontiguousarray(data[(slice(None), *box)]), **kwargs)
    full = Prediction(np.zeros(data.shape[1:], dtype=inner.labels.dtype))
    full.labels[box] = inner.labels
    if inner.probabilities is not None:
        full.probabilities = np.zeros((inner.probabilities.shape[0], *data.shape[1:]), np.float32)
        full.probabilities[0] = 1.0
        full.probabilities[(slice(None), *box)] = inner.probabilities
    if inner.uncertainty is not None:
        full.uncertainty = np.zeros(data.shape[1:], np.float32)
        full.uncertainty[box] = inner.uncertainty
    return full


def predict_label_map(network: nn.Module, plan: dict, data: np.ndarray, spacing, overlap: float = 0.5,
                      device: str | torch.device = "cpu") -> np.ndarray:
    """Label map (z, y, x) on the input array's grid with one network, no test-time augmentation."""
    return predict_case([network], plan, data, spacing, overlap, device).labels
