"""The checks every reader of a plan runs first: a checkpoint's header, an nnU-Net plans.json, a cached plan.json.

A plan reaches us inside files that are downloaded, edited by hand or damaged, and its numbers go straight into
resampling and the sliding window. There an absurd value either fails far from its cause, naming neither file nor
field (spacing 0: a division by zero; 0.001 mm: an ITK exception; a 4096^3 patch: a 275 GB allocation), or runs and
segments wrongly without a word (a patch of 0 voxels). So a plan is validated where it is read, by this one
function, and the error names the file, the field, the value and what is allowed.
"""

from __future__ import annotations

import math
from typing import Any, Optional

__all__ = ["validate_plan", "plan_problems", "spacing_problem", "patch_problem", "SPACING_RANGE_MM",
           "MAX_PATCH_VOXELS", "TASKS"]

# Finer than 0.05 mm or coarser than 100 mm is no medical image: clinical voxels reach 0.075 mm (dental CBCT) at the
# finest and a few mm between slices at the coarsest. Outside the range is a unit mistake (m or um for mm) or a
# damaged file, and resampling a 30 cm CT to 0.001 mm would make 3e5 voxels per axis.
SPACING_RANGE_MM = (0.05, 100.0)

# A whole CT at full resolution (256 slices of 512 x 512) in one window. nnU-Net's default plans stay near 2-3 M voxels
# per patch (MSD lung 3d_fullres: 80 x 192 x 160 = 2.5 M; our lung-cpu preset 0.44 M), so 27 times that refuses only
# typos and damaged files, such as a 4096^3 patch whose input alone would be 275 GB.
MAX_PATCH_VOXELS = 256 * 512 * 512

TASKS = ("segmentation", "propagation", "correction")
CORRECTION_INPUTS = 3            # the network of a "correction" plan also reads the mask, include and exclude clicks
IMAGE_ORDERS = (0, 1, 3)         # the interpolation orders preprocessing.resample_array implements
CROPS = ("none", "lungs")        # predict --crop
REQUIRED = ("target_spacing", "patch_size", "network", "channel_names", "labels", "intensities")
CT_STATISTICS = ("percentile_00_5", "percentile_99_5", "mean", "std")

DEFAULT_FIX = "the plan was edited or damaged; use an unaltered copy of the model or plan"


def validate_plan(plan: Any, source: str, fix: str = DEFAULT_FIX) -> None:
    """Raise one ValueError line naming ``source`` (the file) and every problem of ``plan``, or return."""
    problems = plan_problems(plan)
    if problems:
        raise ValueError(f"{source}: invalid plan: {'; '.join(problems)}; {fix}")


def plan_problems(plan: Any) -> list[str]:
    """What is wrong with ``plan`` (a dict as stored in a checkpoint header or plan.json), field by field."""
    if not isinstance(plan, dict):
        return [f"it is {type(plan).__name__}, not a JSON object"]
    missing = [name for name in REQUIRED if name not in plan]
    if missing:
        return [f"it lacks {', '.join(missing)}"]
    problems = [p for p in (spacing_problem(plan["target_spacing"]), patch_problem(plan["patch_size"])) if p]
    problems += _option_problems(plan)
    channels, labels = plan["channel_names"], plan["labels"]
    channels_ok = isinstance(channels, list) and channels and all(isinstance(c, str) and c for c in channels)
    if not channels_ok:
        problems.append(f"channel_names {_show(channels)} are not a list of channel names")
    else:
        problems += _intensity_problems(channels, plan["intensities"])
    values = list(labels.values()) if isinstance(labels, dict) else []
    labels_ok = (len(values) >= 2 and all(_is_int(v) for v in values)
                 and sorted(int(v) for v in values) == list(range(len(values))))
    if not labels_ok:
        problems.append(f"labels {_show(labels)} are not background = 0 then 1, 2, ... (one value each, "
                        "at least one structure)")
    config, problem = _network(plan["network"])
    if problem:
        problems.append(problem)
    elif not problems:
        problems += _consistency_problems(plan, config)
    return problems


def spacing_problem(value: Any, name: str = "target_spacing") -> Optional[str]:
    if not (isinstance(value, (list, tuple)) and len(value) in (2, 3) and all(_is_number(v) for v in value)):
        return f"{name} {_show(value)} is not 2 or 3 numbers (mm, z y x)"
    low, high = SPACING_RANGE_MM
    if not all(math.isfinite(v) and low <= v <= high for v in value):
        return f"{name} {_show(value)} mm is outside {low:g} to {high:g} mm (a unit mistake or a damaged file?)"
    return None


def patch_problem(value: Any, name: str = "patch_size") -> Optional[str]:
    if not (isinstance(value, (list, tuple)) and len(value) in (2, 3) and all(_is_int(v) and v >= 1 for v in value)):
        return f"{name} {_show(value)} is not 2 or 3 positive integers (voxels, z y x)"
    voxels = math.prod(int(v) for v in value)
    if voxels > MAX_PATCH_VOXELS:
        return (f"{name} {_show(value)} is {voxels:,} voxels per patch, above the {MAX_PATCH_VOXELS:,} of a whole "
                "256 x 512 x 512 CT")
    return None


def _option_problems(plan: dict) -> list[str]:
    problems = []
    if "batch_size" in plan and not (_is_int(plan["batch_size"]) and plan["batch_size"] >= 1):
        problems.append(f"batch_size {_show(plan['batch_size'])} is not a positive integer")
    if plan.get("task", "segmentation") not in TASKS:
        problems.append(f"task {_show(plan['task'])} is not one of {', '.join(TASKS)}")
    if plan.get("image_order", 3) not in IMAGE_ORDERS or isinstance(plan.get("image_order"), bool):
        problems.append(f"image_order {_show(plan['image_order'])} is not one of {IMAGE_ORDERS}")
    if plan.get("separate_z_order") not in (None, *IMAGE_ORDERS) or isinstance(plan.get("separate_z_order"), bool):
        problems.append(f"separate_z_order {_show(plan['separate_z_order'])} is not null or one of {IMAGE_ORDERS}")
    inference = plan.get("inference", {})
    if not isinstance(inference, dict):
        problems.append(f"inference {_show(inference)} is not a JSON object")
    else:
        overlap = inference.get("overlap", 0.5)
        if not (_is_number(overlap) and 0 <= overlap < 1):
            problems.append(f"inference.overlap {_show(overlap)} is not in [0, 1)")
        if inference.get("crop", "none") not in CROPS:
            problems.append(f"inference.crop {_show(inference['crop'])} is not one of {', '.join(CROPS)}")
    return problems


def _intensity_problems(channels: list, intensities: Any) -> list[str]:
    """One statistics object per channel; CT channels are clipped and z-scored with theirs, so they must be finite
    numbers with the lower percentile below the upper (else every voxel becomes one value)."""
    if not (isinstance(intensities, list) and len(intensities) == len(channels)
            and all(isinstance(s, dict) for s in intensities)):
        return [f"intensities {_show(intensities)} are not one statistics object per entry of channel_names "
                f"({len(channels)})"]
    problems = []
    for index, (name, stats) in enumerate(zip(channels, intensities)):
        if name.upper() != "CT":
            continue
        values = [stats.get(key) for key in CT_STATISTICS]
        if not all(_is_number(v) and math.isfinite(v) for v in values):
            problems.append(f"intensities[{index}] of CT channel {index} need finite {', '.join(CT_STATISTICS)}, "
                            f"got {_show({k: stats.get(k) for k in CT_STATISTICS})}")
        elif values[0] > values[1] or values[3] < 0:
            problems.append(f"intensities[{index}]: percentile_00_5 {values[0]:g} above percentile_99_5 "
                            f"{values[1]:g}, or std {values[3]:g} negative")
    return problems


def _network(network: Any):
    from ..nets.config import NetworkConfig

    if not isinstance(network, dict):
        return None, f"network {_show(network)} is not a network config object"
    try:
        return NetworkConfig.from_dict(network), None
    except (ValueError, TypeError) as err:
        return None, f"network: {err}"


def _consistency_problems(plan: dict, config) -> list[str]:
    """The patch, channels and labels must be those of the plan's network, which the sliding window feeds."""
    patch, spacing, dims = list(plan["patch_size"]), plan["target_spacing"], config.spatial_dims
    if len(patch) != dims or len(spacing) != dims:
        return [f"patch_size {patch} and target_spacing {list(spacing)} need {dims} values each for the "
                f"{dims}D network"]
    problems = []
    if config.patch_size is not None and config.patch_size != patch:
        problems.append(f"patch_size {patch} differs from the network's patch_size {config.patch_size}")
    divisor = config.size_divisor()
    if any(p % d for p, d in zip(patch, divisor)):
        problems.append(f"patch_size {patch} is not a multiple of the network's total stride {divisor} per axis")
    extra = CORRECTION_INPUTS if plan.get("task") == "correction" else 0
    if config.in_channels != len(plan["channel_names"]) + extra:
        what = f" + {extra} correction inputs" if extra else ""
        problems.append(f"the network takes {config.in_channels} input channels, the plan's channel_names give "
                        f"{len(plan['channel_names'])}{what}")
    if config.num_classes != len(plan["labels"]):
        problems.append(f"the network has {config.num_classes} output classes, the plan's labels "
                        f"{len(plan['labels'])}")
    return problems


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _show(value: Any, limit: int = 80) -> str:
    """``repr`` cut to ``limit`` characters: a damaged header can hold megabytes where a list belongs."""
    text = repr(list(value) if isinstance(value, tuple) else value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
