"""An official nnU-Net results folder (Diff-UMamba or U-Mamba Bot) as the folds of one of our model packages.

A results folder is ``dataset.json``, ``plans.json`` and ``fold_N/checkpoint_final.pth`` (or ``checkpoint_best.pth``)
for the trainer/plans/configuration it is named after. Each checkpoint is read without unpickling code
(``pth``), its trainer must be one whose network we implement, its weights are renamed (``keys``) and must then
fill our network, built from the same plans (``plans``), exactly: every tensor present, none left over, every
shape equal. Anything else is refused, naming what differs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from ..model_package import PackageFold
from .keys import map_official_state_dict
from .plans import plan_from_nnunet
from .pth import read_nnunet_checkpoint

__all__ = ["TRAINERS", "ImportedModel", "import_results_folder", "model_card"]

# The official trainers and the network each builds (3D patch: the *_3d network; 2D: the *_2d one).
TRAINERS = {"nnUNetTrainerDiffUMamba": "diffumamba", "nnUNetTrainerUMambaBot": "umambabot"}
CHECKPOINTS = {"final": "checkpoint_final.pth", "best": "checkpoint_best.pth"}


@dataclass
class ImportedModel:
    folds: list[PackageFold]
    trainer: str
    configuration: str
    network: str
    dataset_json: bytes
    notes: list[str] = field(default_factory=list)


def import_results_folder(folder: Path, folds: Optional[Sequence[str]] = None,
                          checkpoint: str = "final") -> ImportedModel:
    from ..checkpoint import FORMAT, provenance
    from ..nets import build_network

    folder = Path(folder)
    for name in ("dataset.json", "plans.json"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder}: no {name}; give an nnU-Net results folder "
                                    "(nnUNet_results/DatasetXXX_Name/<trainer>__<plans>__<configuration>)")
    dataset_raw = (folder / "dataset.json").read_bytes()
    dataset, plans = _json(folder / "dataset.json", dataset_raw), _json(folder / "plans.json")
    fold_names = list(folds) if folds else sorted((p.name[len("fold_"):] for p in folder.glob("fold_*") if p.is_dir()),
                                                  key=_fold_order)
    if not fold_names:
        raise FileNotFoundError(f"{folder}: no fold_* folders with checkpoints")
    imported, notes = [], []
    expected = None                                  # our network's tensor shapes, built once for all folds
    trainer = configuration = network = None
    for fold in fold_names:
        path = folder / f"fold_{fold}" / CHECKPOINTS[checkpoint]
        loaded = read_nnunet_checkpoint(path)
        this_trainer = str(loaded["trainer_name"])
        if this_trainer not in TRAINERS:
            raise ValueError(f"{path}: trained by {this_trainer}; import-nnunet converts only the official "
                             f"{' and '.join(TRAINERS)} (whose networks DiffUMambaSeg implements)")
        init = loaded.get("init_args") or {}
        this_configuration = str(init.get("configuration", _configuration_from_name(folder)))
        if trainer is None:
            trainer, configuration = this_trainer, this_configuration
        elif (this_trainer, this_configuration) != (trainer, configuration):
            raise ValueError(f"{path}: {this_trainer}/{this_configuration}, but fold {fold_names[0]} is "
                             f"{trainer}/{configuration}; import the folds of one training")
        mapped = map_official_state_dict(loaded["network_weights"], str(path))
        network = TRAINERS[trainer]
        if mapped.network != network:
            raise ValueError(f"{path}: {trainer} checkpoint whose weights are a {mapped.network} network")
        if expected is None:                         # folds share trainer and configuration (checked above)
            plan = plan_from_nnunet(plans, dataset, configuration, network, str(folder))
            config = plan.network_config()
            expected = {k: tuple(v.shape) for k, v in build_network(config).state_dict().items()}
        _check_own_plans(init.get("plans"), plan, dataset, configuration, network, path, folder)
        _check_topology(expected, mapped.state, path)
        notes += [n for n in mapped.notes if n not in notes]
        header = {"format": FORMAT, "network": config.to_dict(), "provenance": provenance(), **plan.checkpoint_meta(),
                  "source": {"nnunet_results": folder.name, "trainer": trainer, "configuration": configuration,
                             "fold": fold, "checkpoint": path.name, "epoch": loaded.get("current_epoch"),
                             "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                             "mirroring_axes": list(loaded.get("inference_allowed_mirroring_axes") or [])}}
        imported.append(PackageFold(fold, header, mapped.state))
    return ImportedModel(imported, trainer, configuration, network, dataset_raw, notes)


# Plan fields that change preprocessing or the network, and what nnU-Net's plans call them
_PLAN_FIELDS = {"target_spacing": "spacing", "patch_size": "patch_size", "channel_names": "normalization_schemes",
                "intensities": "foreground_intensity_properties_per_channel", "image_order": "resampling order",
                "separate_z_order": "resampling order_z", "network": "network architecture"}


def _check_own_plans(own: object, plan, dataset: dict, configuration: str, network: str, path: Path,
                     folder: Path) -> None:
    """nnU-Net stores the plans a fold was trained with in its checkpoint (``init_args``). Where they differ from the
    folder's plans.json in what the model sees, running the fold under plans.json would prepare its images otherwise
    than in training and segment wrongly without an error, so such a fold is refused. Only ``configuration`` is
    compared: the other configurations and bookkeeping (batch size, names) may differ harmlessly."""
    if not isinstance(own, dict):
        return                                       # not recorded: nothing to compare
    theirs = plan_from_nnunet(own, dataset, configuration, network, str(path), f"{path} (its init_args plans)")
    ours, theirs = asdict(plan), asdict(theirs)
    differing = [_difference(name, theirs[key], ours[key]) for key, name in _PLAN_FIELDS.items()
                 if json.dumps(theirs[key], sort_keys=True) != json.dumps(ours[key], sort_keys=True)]  # NaN == NaN
    if differing:
        raise ValueError(f"{path}: was trained with other plans than {folder / 'plans.json'} (its init_args, "
                         f"configuration {configuration}): {'; '.join(differing)}; import it with the plans.json "
                         "of its own training")


def _difference(name: str, checkpoint: object, plans_json: object) -> str:
    """The differing field, short: a network's differing keys, a channel's differing statistics, else both values."""
    if isinstance(checkpoint, dict) and isinstance(plans_json, dict):            # the network config
        return f"{name} ({', '.join(k for k in plans_json if plans_json[k] != checkpoint.get(k))})"
    if name.startswith("foreground_intensity") and len(checkpoint) == len(plans_json):
        values = [f"channel {c} {k} {theirs.get(k)} in the checkpoint vs {ours.get(k)}"
                  for c, (theirs, ours) in enumerate(zip(checkpoint, plans_json))
                  for k in sorted(set(theirs) | set(ours)) if theirs.get(k) != ours.get(k)]
        return f"{name} ({', '.join(values)})"
    return f"{name} {_short(checkpoint)} in the checkpoint vs {_short(plans_json)}"


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _check_topology(ours: dict, theirs: dict, path: Path) -> None:
    """The renamed weights must fill our network exactly (``ours``: name -> shape); otherwise name the differing
    tensors."""
    missing = [k for k in ours if k not in theirs]
    extra = [k for k in theirs if k not in ours]
    shapes = [f"{k} {tuple(theirs[k].shape)} vs our {ours[k]}" for k in ours
              if k in theirs and tuple(theirs[k].shape) != ours[k]]
    if missing or extra or shapes:
        parts = []
        for label, items in (("tensors our network has and the checkpoint lacks", missing),
                             ("tensors our network does not have", extra), ("shapes differ", shapes)):
            if items:
                parts.append(f"{label} ({len(items)}): {', '.join(items[:4])}{', ...' if len(items) > 4 else ''}")
        raise ValueError(f"{path}: its network is not the one the plans describe for our DiffUMamba/UMambaBot "
                         f"(a modified topology?): {'; '.join(parts)}")


def _json(path: Path, raw: Optional[bytes] = None) -> dict:
    try:
        data = json.loads(raw if raw is not None else path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err}); copy the file from the results folder again") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def _fold_order(name: str):
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


def _configuration_from_name(folder: Path) -> str:
    parts = folder.name.split("__")
    return parts[2] if len(parts) == 3 else "3d_fullres"


def model_card(imported: ImportedModel, folder: Path, dataset: dict) -> str:
    """A model card stating where the weights came from and what the import did (accuracy: the source's to give)."""
    plan = imported.folds[0].header["plan"]
    labels = ", ".join(f"{v}={k}" for k, v in plan["labels"].items() if v)
    lines = [f"# {dataset.get('name', folder.parent.name)}: {imported.trainer} ({imported.configuration}), imported",
             "",
             f"- Source: nnU-Net results folder `{folder.name}` of `{folder.parent.name}`, folds "
             f"{', '.join(f.name for f in imported.folds)} (`{imported.folds[0].header['source']['checkpoint']}`).",
             f"- Network: our `{imported.network}`, the same tensors as the official network after renaming; "
             "runs on CPU (pure-PyTorch selective scan) or with mamba-ssm's CUDA kernels.",
             f"- Input channels: {', '.join(plan['channel_names'])}; labels: {labels}.",
             f"- Target spacing {plan['target_spacing']} mm, patch {plan['patch_size']}.",
             "- Accuracy: not measured by the import. Ask the authors of the weights; their licence applies.",
             "- Differences from nnU-Net's own inference: no mirroring unless `predict --tta`; images are resampled "
             "with cubic B-splines on every axis (nnU-Net resamples the slice axis of anisotropic images with "
             "nearest neighbour when it changes the slice spacing; see docs/nnunet_import.md)."]
    lines += [f"- Note: {note}" for note in imported.notes]
    return "\n".join(lines) + "\n"
