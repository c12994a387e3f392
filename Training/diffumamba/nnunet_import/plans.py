"""An nnU-Net v2 ``plans.json`` + ``dataset.json`` configuration as our ``Plan``, refusing what we would compute
differently.

The official trainers build their network from the configuration's kernel sizes, pool strides, blocks per stage and
feature widths (``get_*_from_plans``), which ``nets.config.from_nnunet_plans`` reads in both plan layouts (before and
after nnU-Net 2.4's ``architecture`` entry). Preprocessing maps one to one where nnU-Net's choices are ones we make:
the configuration's spacing, CT normalisation with the dataset's foreground percentiles, mean and sd (the plans'
``foreground_intensity_properties_per_channel``), per-image z-score, nonzero crop, cubic resampling with the slice
axis of anisotropic images resampled separately (``separate_z_order``). Anything else
(transposed axes, region-based labels, masked z-score, other normalisations) is refused by name, because a model
fed differently prepared images segments wrongly without any error.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import Any, Optional

from ..data.plan import Plan
from ..data.plan_checks import patch_problem, spacing_problem, validate_plan
from ..nets.config import NetworkConfig, from_nnunet_plans

__all__ = ["plan_from_nnunet", "configuration_of"]

# nnU-Net normalisation scheme -> the channel name our ``normalise`` treats the same way
_NORMALISATION = {"CTNormalization": "CT", "NoNormalization": "noNorm"}


def configuration_of(plans: dict, name: str, source: str = "plans.json") -> dict:
    """The configuration ``name`` with what it ``inherits_from`` filled in (e.g. 3d_cascade_fullres)."""
    configurations = plans.get("configurations")
    if not isinstance(configurations, dict) or name not in configurations:
        known = sorted(configurations) if isinstance(configurations, dict) else []
        raise ValueError(f"{source}: no configuration {name!r} (it has {', '.join(known) or 'none'})")
    conf = dict(configurations[name])
    seen = {name}
    while "inherits_from" in conf:
        parent = conf.pop("inherits_from")
        if parent in seen or parent not in configurations:
            raise ValueError(f"{source}: configuration {name!r} inherits from {parent!r}, which is missing or circular")
        seen.add(parent)
        conf = {**configurations[parent], **conf}
    return conf


def plan_from_nnunet(plans: dict, dataset: dict, configuration: str, network: str,
                     source: str = "the results folder", plans_file: Optional[str] = None) -> Plan:
    """Our plan for the network ``network`` trained by nnU-Net with ``plans`` / ``dataset`` (dataset.json).

    ``plans_file`` names ``plans`` in errors (default ``source``/plans.json). The result is validated like every plan
    we read, so an absurd plans.json is refused here, before a package is written, not when the package is run."""
    plans_file = plans_file or f"{source}/plans.json"
    conf = configuration_of(plans, configuration, plans_file)
    _check_geometry(conf, configuration, plans_file)
    problems = []
    if conf.get("previous_stage"):
        problems.append(f"configuration {configuration} is a cascade stage (its network also takes the segmentation "
                        f"of {conf['previous_stage']}); import the 3d_fullres or 3d_lowres configuration")
    transpose = plans.get("transpose_forward", [0, 1, 2])
    if list(transpose) != list(range(len(transpose))):
        problems.append(f"transpose_forward {transpose} (nnU-Net reorders the axes of this dataset; we do not)")
    labels = dataset.get("labels", {})
    if any(not isinstance(v, int) for v in labels.values()) or "regions_class_order" in dataset:
        problems.append("region-based labels (overlapping label groups); only plain label maps are supported")
    elif sorted(labels.values()) != list(range(len(labels))) or labels.get("background") != 0:
        problems.append(f"labels {labels} are not background=0 then 1, 2, ... consecutively")
    channels = dataset.get("channel_names") or dataset.get("modality") or {}
    schemes = conf.get("normalization_schemes", [])
    masked = conf.get("use_mask_for_norm", [False] * len(schemes))
    names = []
    for index, (scheme, use_mask) in enumerate(zip(schemes, masked)):
        name = _NORMALISATION.get(scheme) or (channels.get(str(index)) if scheme == "ZScoreNormalization" else None)
        if name is None:
            problems.append(f"channel {index} uses {scheme}, which DiffUMambaSeg does not implement")
        elif scheme == "ZScoreNormalization" and (use_mask or name.upper() == "CT" or name == "noNorm"):
            problems.append(f"channel {index} ({name}) uses ZScoreNormalization"
                            + (" inside the nonzero mask" if use_mask else " under a name we normalise otherwise"))
        names.append(name)
    if len(schemes) != len(channels):
        problems.append(f"{len(schemes)} normalisation schemes for {len(channels)} channels")
    kwargs = conf.get("resampling_fn_data_kwargs") or {}
    if not isinstance(kwargs, dict):
        problems.append(f"resampling_fn_data_kwargs {kwargs!r} is not an object")
        kwargs = {}
    if kwargs.get("order", 3) not in (1, 3) or kwargs.get("order_z", 0) not in (0, 1, 3):
        problems.append(f"image resampling of order {kwargs.get('order')}/{kwargs.get('order_z')} (we implement "
                        "orders 1 and 3 in-plane, 0, 1 and 3 along the slices)")
    if kwargs.get("force_separate_z") is not None:
        problems.append(f"force_separate_z {kwargs['force_separate_z']} (we implement nnU-Net's automatic choice)")
    if problems:
        raise ValueError(f"{source}: cannot be imported faithfully: " + "; ".join(problems))
    intensities = plans.get("foreground_intensity_properties_per_channel")
    intensities = intensities if isinstance(intensities, dict) else {}
    stats = [_plain(intensities.get(str(c))) for c in range(len(names))]
    for c, name in enumerate(names):
        if name == "CT" and not all(k in stats[c] for k in ("percentile_00_5", "percentile_99_5", "mean", "std")):
            raise ValueError(f"{plans_file}: channel {c} uses CTNormalization but the plans lack its "
                             "foreground intensity statistics")
    try:
        config: NetworkConfig = from_nnunet_plans(plans, configuration, network=network, in_channels=len(names),
                                                  num_classes=len(labels), deep_supervision=True)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{plans_file}: configuration {configuration}'s network architecture: {err}") from None
    digest = hashlib.sha256(json.dumps(plans, sort_keys=True).encode()).hexdigest()[:16]
    median = conf.get("median_image_size_in_voxels")
    valid_median = isinstance(median, list) and all(isinstance(n, (int, float)) and n >= 1 for n in median)
    plan = Plan(target_spacing=[float(s) for s in conf["spacing"]], patch_size=[int(p) for p in conf["patch_size"]],
                batch_size=int(conf.get("batch_size", 2)),
                median_shape=[int(n) for n in (median if valid_median else conf["patch_size"])],
                network=config.to_dict(), channel_names=names, labels={k: int(v) for k, v in labels.items()},
                intensities=stats, fingerprint_hash=f"nnunet-plans-{digest}",
                image_order=int(kwargs.get("order", 3)), linear_labels=False, inference={"overlap": 0.5},
                separate_z_order=int(kwargs.get("order_z", 0)))
    validate_plan(asdict(plan), plans_file, _FIX)
    return plan


_FIX = "correct the file (it must be the plans the checkpoints were trained with)"


def _check_geometry(conf: dict, configuration: str, plans_file: str) -> None:
    """Spacing, patch and batch size as plans.json writes them, refused by their nnU-Net names before any is
    converted (a patch of "big" would otherwise fail as ``int('b')``, naming neither file nor field)."""
    where = f"configurations.{configuration}"
    problems = [spacing_problem(conf.get("spacing"), f"{where}.spacing"),
                patch_problem(conf.get("patch_size"), f"{where}.patch_size")]
    batch = conf.get("batch_size", 2)
    if not (isinstance(batch, int) and not isinstance(batch, bool) and batch >= 1):
        problems.append(f"{where}.batch_size {batch!r} is not a positive integer")
    problems = [p for p in problems if p]
    if problems:
        raise ValueError(f"{plans_file}: {'; '.join(problems)}; {_FIX}")


def _plain(stats: Any) -> dict[str, float]:
    """The numeric statistics of a channel (nnU-Net writes only numbers; anything else is left out and then missing)."""
    if not isinstance(stats, dict):
        return {}
    return {k: float(v) for k, v in stats.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
