"""Experiment plan: target spacing, patch size and network topology from a dataset fingerprint.

The rules are nnU-Net's, simplified where noted:
- target spacing: the median spacing per axis; if the data are anisotropic (coarsest / finest median
  spacing > 3), the coarse axis takes the 10th percentile of its spacings instead (fewer interpolated slices).
- topology: downsample an axis (stride 2) while its current spacing is at most twice the finest current
  spacing and it keeps at least ``min_edge`` voxels; 3-wide kernels on axes whose spacing is within twice
  the finest, 1-wide otherwise; at most ``max_stages`` stages.
- patch: start from the median image shape at the target spacing and, while the estimated training memory
  exceeds the budget, shrink the axis with the largest patch / median-shape ratio by one divisor step
  (nnU-Net estimates VRAM from a trial network; we use a per-feature-value cost calibrated with
  ``bench/networks.py``).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

import numpy as np

from ..nets.config import NetworkConfig, stage_features, umambabot_block_counts

__all__ = ["Plan", "Preset", "PRESETS", "make_plan", "plan_topology", "estimate_memory_gb"]

# bench/networks.py, fp32 on CPU: 96^3, batch 2, 6 stages of 32..320 features -> 8.1 GB peak for about
# 75 M feature values. AMP halves it (``make_plan(mixed_precision=True)``).
BYTES_PER_FEATURE_VALUE = 100


@dataclass
class Plan:
    """Everything preprocessing, training and inference need to agree on; hashed to key the cache."""

    target_spacing: list[float]
    patch_size: list[int]
    batch_size: int
    median_shape: list[int]
    network: dict
    channel_names: list[str]
    labels: dict
    intensities: list[dict]
    fingerprint_hash: str
    image_order: int = 3
    linear_labels: bool = False
    inference: dict = field(default_factory=dict)   # defaults for ``predict``: overlap, crop
    task: str = "segmentation"                       # "propagation" (channels: current, prior image, prior GTV) or
                                                     # "correction" (the network adds mask, include, exclude)
    separate_z_order: Optional[int] = None           # nnU-Net's slice-axis resampling (imported models), see
                                                     # preprocessing.preprocess_case; None: image_order on all axes

    def network_config(self) -> NetworkConfig:
        return NetworkConfig.from_dict(self.network)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "plan.json") -> "Plan":
        """The plan in ``text`` (the file ``source``), validated: a plan read back may have been edited or damaged."""
        from .plan_checks import validate_plan

        try:
            values = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{source}: not valid JSON ({err}); delete it and preprocess again") from None
        fix = "delete it and preprocess again"
        validate_plan(values, source, fix)
        try:
            return cls(**values)
        except TypeError as err:                  # a key Plan does not know, or one it needs missing
            raise ValueError(f"{source}: invalid plan: {err}; {fix}") from None

    def checkpoint_meta(self) -> dict:
        """The header entries every checkpoint trained with this plan carries (plan, labels, data provenance)."""
        return {"plan": asdict(self), "labels": dict(self.labels), "fingerprint_hash": self.fingerprint_hash}

    def hash(self) -> str:
        values = asdict(self)
        if values["separate_z_order"] is None:
            del values["separate_z_order"]           # plans from before the field keep their hash (and cache)
        return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Preset:
    """A named planning profile: fixed choices that replace the data-driven ones where they are set."""

    target_spacing: Optional[tuple[float, ...]] = None
    features: Optional[tuple[int, int]] = None
    max_patch: Optional[tuple[int, ...]] = None
    inference: dict = field(default_factory=dict)
    description: str = ""


PRESETS = {
    # The default lung-GTV configuration, fast by design on a laptop CPU (bench/predict.py): 1.5 mm in-plane
    # (a GTV of 1 cm is still 6-7 voxels wide), 3 mm slices (LUNG1's own), half-width features, a 14.4 cm cube
    # of context per patch (48 x 96 x 96), 25 % overlap, the lungs' box only. On LUNG1-001 the 48 x 96 x 96
    # patch tiles the lung box with 18 windows where 32 x 128 x 128 needed 30: sliding window 28 s vs 56 s.
    "lung-cpu": Preset(target_spacing=(3.0, 1.5, 1.5), features=(16, 256), max_patch=(48, 96, 96),
                       inference={"overlap": 0.25, "crop": "lungs"},
                       description="lung GTV on CT for CPU inference (3 x 1.5 x 1.5 mm, features 16-256, "
                                   "patch 48 x 96 x 96, overlap 0.25, lung crop)"),
}


def plan_topology(patch: Sequence[int], spacing: Sequence[float], max_stages: int = 6,
                  min_edge: int = 4) -> tuple[list[list[int]], list[list[int]]]:
    """(kernel sizes, strides) per stage for a patch at a spacing (nnU-Net's rule, see the module doc)."""
    current, size = list(spacing), list(patch)
    kernel = [1] * len(size)

    def widen():  # once an axis gets 3-wide kernels it keeps them, as in nnU-Net
        return [3 if k == 3 or s <= 2 * min(current) else 1 for k, s in zip(kernel, current)]

    kernel = widen()
    all_kernels, all_strides = [kernel], [[1] * len(size)]
    while len(all_strides) < max_stages:
        stride = [2 if s <= 2 * min(current) and n >= 2 * min_edge else 1 for s, n in zip(current, size)]
        if 2 not in stride:
            break
        size = [n // st for n, st in zip(size, stride)]
        current = [s * st for s, st in zip(current, stride)]
        kernel = widen()
        all_strides.append(stride)
        all_kernels.append(kernel)
    return all_kernels, all_strides


def estimate_memory_gb(patch: Sequence[int], strides: Sequence[Sequence[int]], batch_size: int,
                       base_features: int = 32, max_features: int = 320) -> float:
    size, values = list(patch), 0
    for stage, (stride, features) in enumerate(zip(strides, stage_features(len(strides), base_features, max_features))):
        size = [n // s for n, s in zip(size, stride)]
        values += math.prod(size) * features
    return batch_size * values * BYTES_PER_FEATURE_VALUE / 1e9


def make_plan(fingerprint: dict, fingerprint_hash: str, network: str = "diffumamba", spatial_dims: int = 3,
              memory_budget_gb: float = 8.0, batch_size: int = 2, base_features: int = 32,
              max_features: int = 320, max_patch: Sequence[int] | None = None,
              mixed_precision: bool = True, target_spacing: Sequence[float] | None = None,
              inference: dict | None = None, task: str = "segmentation",
              patch_size: Sequence[int] | None = None) -> Plan:
    """A plan for a fingerprinted dataset.

    Args:
        memory_budget_gb: training memory the patch may use (nnU-Net's reference GPU has 8 GB).
        max_patch: optional upper bound per axis (e.g. to keep CPU experiments small).
        mixed_precision: training will use AMP (CUDA), which stores activations at half the cost.
        target_spacing: (z, y, x) mm instead of the data-driven choice (e.g. a preset's).
        inference: defaults recorded for ``predict`` (``overlap``, ``crop``).
        patch_size: the patch itself instead of the median shape capped by ``max_patch`` (still rounded down to
            the strides, and shrunk if it exceeds the memory budget).
    """
    spacings = np.array(fingerprint["spacings"], dtype=float)
    shapes = np.array(fingerprint["shapes_after_crop"], dtype=float)
    target = np.median(spacings, axis=0)
    if target_spacing is not None:
        if len(target_spacing) != 3 or min(target_spacing) <= 0:
            raise ValueError(f"target spacing must be 3 positive numbers (z y x), got {list(target_spacing)}")
        target = np.array(target_spacing, dtype=float)
    elif target.max() / target.min() > 3:
        coarse = int(np.argmax(target))
        target[coarse] = max(np.percentile(spacings[:, coarse], 10), np.delete(target, coarse).max())
    median_shape = np.median(shapes * spacings / target, axis=0).round().astype(int)
    if spatial_dims == 2:
        target, median_shape = target[1:], median_shape[1:]
    elif spatial_dims != 3:
        raise ValueError("spatial_dims must be 2 or 3")
    max_stages = 6 if spatial_dims == 3 else 7
    patch = [int(n) for n in median_shape]
    if patch_size is not None:
        if len(patch_size) != spatial_dims or min(patch_size) < 1:
            raise ValueError(f"--patch needs {spatial_dims} positive sizes, got {list(patch_size)}")
        patch = [int(n) for n in patch_size]
    elif max_patch is not None:
        patch = [min(p, int(m)) for p, m in zip(patch, max_patch)]
    while True:
        kernels, strides = plan_topology(patch, target, max_stages)
        divisor = [math.prod(s[a] for s in strides) for a in range(spatial_dims)]
        patch = [max(d, (p // d) * d) for p, d in zip(patch, divisor)]
        cost = estimate_memory_gb(patch, strides, batch_size, base_features, max_features)
        if cost * (0.5 if mixed_precision else 1.0) <= memory_budget_gb:
            break
        ratios = [p / m for p, m in zip(patch, median_shape)]
        axis = int(np.argmax(ratios))
        if patch[axis] <= divisor[axis]:
            raise ValueError(f"no patch fits {memory_budget_gb} GB; raise the memory budget")
        patch[axis] -= divisor[axis]
    enc, dec = umambabot_block_counts(len(strides))
    labels = dict(fingerprint["labels"])
    in_channels = len(fingerprint["channel_names"])
    if task == "correction":          # + mask, include, exclude (correction.network_input); one lesion class
        in_channels += 3
        names = [name for name, value in labels.items() if int(value) != 0]
        labels = {"background": 0, names[0] if len(names) == 1 else "lesion": 1}
    num_classes = len(labels)
    config = NetworkConfig(network=network, spatial_dims=spatial_dims, in_channels=in_channels,
                           num_classes=num_classes, features_per_stage=stage_features(len(strides), base_features, max_features),
                           kernel_sizes=kernels, strides=strides, n_blocks_per_stage=enc,
                           n_blocks_per_stage_decoder=dec, patch_size=patch)
    return Plan(target_spacing=[float(t) for t in target], patch_size=patch, batch_size=batch_size,
                median_shape=[int(m) for m in median_shape], network=config.to_dict(),
                channel_names=list(fingerprint["channel_names"]), labels=labels,
                intensities=list(fingerprint["foreground_intensities"]), fingerprint_hash=fingerprint_hash,
                inference=dict(inference or {}), task=task)
