"""Runs every (fold, seed, arm) of an experiment and scores each on its fold's held-out cases.

An arm is a network trained with a method (``--networks`` x ``--methods``). Fairness is structural: one plan
(patch, spacing, features, topology) is made once and only the network name or the method changes; every arm
sees the same splits, the same seeded training subset, the same labelled / unlabelled cases and corrupted labels,
the same seeds and the same number of iterations. Each run is scored with its *last* checkpoint on the original image grid
(no checkpoint selection on the held-out cases, which would bias the comparison).

Interrupt and restart freely: finished runs keep their ``metrics.json`` and are not repeated; a run
killed mid-training resumes from its last epoch.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from ..data.pipeline import Prepared
from ..files import atomic_write_text

__all__ = ["ExperimentSpec", "experiment_arms", "scored_names", "run_experiment", "experiment_rows"]


@dataclass
class ExperimentSpec:
    """What is compared and under which budget (recorded in OUT/experiment.json)."""

    networks: list[str]
    baseline: str                  # an arm name (see ``arms``)
    n_folds: int
    folds: list[int]
    seeds: list[int]
    train_fraction: float = 1.0
    group_pattern: Optional[str] = None
    batch_size: int = 2
    nsd_tolerance_mm: float = 2.0
    training: dict = field(default_factory=dict)   # TrainSettings fields except seed and method
    methods: list[str] = field(default_factory=lambda: ["supervised"])
    labeled_fraction: float = 1.0
    corrupt_fraction: float = 0.0
    corrupt_voxels: int = 3
    label_noise: str = "contour"        # training.label_noise.NOISE_MODELS
    labeled_unit: str = "case"          # what labeled_fraction counts: "case" or "patient" (by group_pattern)

    def __post_init__(self):
        if len(set(self.networks)) != len(self.networks) or len(set(self.methods)) != len(self.methods):
            raise ValueError("a network or a method is listed twice")
        names = [name for name, _, _ in self.arms()]
        if self.baseline not in names:
            raise ValueError(f"the baseline {self.baseline!r} must be one of the arms {names}")
        if any(m.partition(":")[0] == "diffcl" for m in self.methods) and self.labeled_fraction >= 1:
            raise ValueError("Diff-CL needs unlabelled cases: give --labeled-fraction below 1")
        if self.labeled_unit == "patient" and not self.group_pattern:
            raise ValueError("--labeled-unit patient needs a group pattern (--group-pattern or dataset.json's)")
        bad = [f for f in self.folds if not 0 <= f < self.n_folds]
        if bad:
            raise ValueError(f"folds {bad} do not exist with {self.n_folds} folds")


    def arms(self) -> list[tuple[str, str, str]]:
        return experiment_arms(self.networks, self.methods)


def experiment_arms(networks: Sequence[str], methods: Sequence[str]) -> list[tuple[str, str, str]]:
    """(arm name, network, method arm): the network's name when only supervised training is compared, the method
    arm's (``METHOD[:NAME=VALUE,...]``) when only one network is, else NETWORK-METHOD."""
    from ..training.methods import parse_method_arm

    arms = []
    for network in networks:
        for method in methods:
            parse_method_arm(method)                    # refuse a bad arm before anything trains
            name = network if list(methods) == ["supervised"] else method if len(networks) == 1 else f"{network}-{method}"
            arms.append((name, network, method))
    return arms


def scored_names(arms: Sequence[tuple[str, str, str]]) -> list[str]:
    """The table's rows in order: every arm, and after a Diff-CL arm its diffusion branch and the two branches'
    mean (``ARM/diffusion``, ``ARM/mean``)."""
    names = []
    for name, _, method in arms:
        names.append(name)
        if method.partition(":")[0] == "diffcl":
            names += [f"{name}/{branch}" for branch in DIFFCL_BRANCHES]
    return names


DIFFCL_BRANCHES = ("diffusion", "mean")


def run_experiment(prepared: Prepared, spec: ExperimentSpec, out: Path, progress: bool = True,
                   log: Callable[[str], None] = print) -> list[dict]:
    """Train and score every run not finished yet; returns all per-case rows."""
    from ..training.case_roles import assign_roles
    from ..training.splits import fold_cases, load_or_create_splits, subset

    out.mkdir(parents=True, exist_ok=True)
    _record_spec(out / "experiment.json", spec, prepared)
    names = [c.name for c in prepared.cases]
    splits = load_or_create_splits(prepared.dataset.root / "splits_final.json", names, spec.n_folds,
                                   group_pattern=spec.group_pattern)
    rows = []
    # Seed-major: every fold of seed 0 before any of seed 1, so an experiment stopped early has scored every case.
    for seed in spec.seeds:
        for fold in spec.folds:
            train_names, val_names = fold_cases(splits, names, str(fold))
            chosen = subset(train_names, spec.train_fraction, seed) if spec.train_fraction < 1 else train_names
            roles = assign_roles(chosen, seed, spec.labeled_fraction, corrupt_fraction=spec.corrupt_fraction,
                                 corrupt_voxels=spec.corrupt_voxels, label_noise=spec.label_noise,
                                 group_pattern=spec.group_pattern if spec.labeled_unit == "patient" else None)
            (out / "runs" / f"fold{fold}_seed{seed}").mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / "runs" / f"fold{fold}_seed{seed}" / "cases.json",
                              json.dumps({"train": list(chosen), "val": list(val_names), **roles.to_dict()}, indent=1) + "\n")
            cache: dict = {}
            for arm, network, method in spec.arms():
                unlabelled = f" + {len(roles.unlabeled)} unlabelled" if method.startswith("diffcl") else ""
                log(f"fold {fold}, seed {seed}: {arm} on {len(roles.labeled)} labelled case(s){unlabelled}, "
                    f"scored on {len(val_names)}")
                rows += _run_one(prepared, spec, (arm, network, method), fold, seed, roles, val_names, out, cache,
                                 progress)
    return rows


def _run_one(prepared: Prepared, spec: ExperimentSpec, arm: tuple[str, str, str], fold: int, seed: int,
             roles, val_names: Sequence[str], out: Path, cache: dict, progress: bool) -> list[dict]:
    from ..training.case_roles import load_cases
    from ..training.hard_negatives import cases_for_sampling
    from ..training.trainer import Trainer, TrainSettings

    from ..training.methods import parse_method_arm

    name, network, arm_method = arm
    method, overrides = parse_method_arm(arm_method)
    run_dir = out / "runs" / f"fold{fold}_seed{seed}" / name.replace(":", "_").replace("=", "-").replace(",", "_")
    result = run_dir / "metrics.json"
    if result.exists():
        return json.loads(result.read_text())["rows"]
    plan = dataclasses.replace(prepared.plan, network={**prepared.plan.network, "network": network})
    labelled, unlabelled = load_cases(prepared.folder, roles, seed, cache, with_unlabeled=method == "diffcl")
    labelled = cases_for_sampling(labelled, spec.training.get("hard_negative", 0.0),
                                  spec.training.get("lung_region", False), plan, seed)
    meta = {**plan.checkpoint_meta(), "cases": {"fold": fold, "val": list(val_names), **roles.to_dict()}}
    training = dict(spec.training)
    options = {group: dict(values) for group, values in training.pop("method_options", {}).items()}
    for group, values in overrides.items():           # the arm's own settings win over the experiment's
        options[group] = {**options.get(group, {}), **values}
    trainer = Trainer(plan.network_config(), labelled, [], run_dir,
                      TrainSettings(**training, seed=seed, method=method, method_options=options),
                      batch_size=spec.batch_size, meta=meta, unlabeled_cases=unlabelled)
    trainer.resume()
    trainer.fit(progress=progress)
    networks = {name: trainer.network}
    if method == "diffcl":
        from ..checkpoint import load_model

        networks[f"{name}/diffusion"] = load_model(run_dir / "diffusion.safetensors", trainer.device)[0]
    rows = _score(networks, plan, prepared, val_names, spec.nsd_tolerance_mm, trainer.device)
    seconds = _training_seconds(run_dir / "log.csv")
    for row in rows:
        row.update(method=arm_method, fold=fold, seed=seed, train_seconds=seconds)
    atomic_write_text(result, json.dumps({"rows": rows}, indent=1) + "\n")
    return rows


def _score(networks: dict, plan, prepared: Prepared, val_names: Sequence[str], tolerance_mm: float,
           device) -> list[dict]:
    """Predict each held-out case with each network on its original grid and score it per label; with two
    networks (Diff-CL's branches) also their mean: the average of their softmax probabilities on that grid."""
    from dataclasses import asdict

    from ..data.fingerprint import read_case
    from ..evaluation.metrics import label_metrics
    from ..inference.predictor import predict_case

    cases = {c.name: c for c in prepared.cases}
    rows = []
    for name in val_names:
        data, label, spacing, _ = read_case(cases[name])
        predictions, probabilities = {}, []
        for arm, network in networks.items():
            network.eval()
            prediction = predict_case([network], asdict(plan), data, spacing, device=device,
                                      probabilities=len(networks) > 1)
            predictions[arm] = prediction.labels
            probabilities.append(prediction.probabilities)
        if len(networks) > 1:
            predictions[f"{next(iter(networks))}/mean"] = np.mean(probabilities, axis=0).argmax(0)
        for arm, prediction in predictions.items():
            for label_name, value in plan.labels.items():
                if value == 0:
                    continue
                metrics = label_metrics(prediction == value, label == value, spacing, tolerance_mm)
                rows.append({"network": arm, "case": name, "label": label_name, **metrics})
    return rows


def _training_seconds(log_csv: Path) -> float:
    with log_csv.open() as handle:
        return float(sum(float(row["seconds"]) for row in csv.DictReader(handle)))


def _record_spec(path: Path, spec: ExperimentSpec, prepared: Prepared) -> None:
    """Write the spec once; refuse to mix runs of different settings in one folder."""
    record = {"spec": dataclasses.asdict(spec), "plan_hash": prepared.plan.hash(),
              "dataset": str(prepared.dataset.root)}
    if path.exists():
        previous = json.loads(path.read_text())
        defaults = {k: v for k, v in record["spec"].items() if k in _ADDED_LATER and k not in previous["spec"]}
        previous["spec"] = {**defaults, **previous["spec"]}     # folders written before these fields existed
        previous["spec"]["training"] = {**{k: v for k, v in record["spec"]["training"].items()
                                           if k in _ADDED_LATER and k not in previous["spec"]["training"]},
                                        **previous["spec"]["training"]}
        if previous["spec"] != record["spec"] or previous["plan_hash"] != record["plan_hash"]:
            raise ValueError(f"{path.parent} holds an experiment with other settings; use another --out folder")
        return
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")


_ADDED_LATER = ("methods", "labeled_fraction", "corrupt_fraction", "corrupt_voxels", "method_options", "label_noise",
                "labeled_unit")


def experiment_rows(out: Path) -> list[dict]:
    """Every finished run's rows under ``out`` (to re-print a table without training)."""
    return [row for path in sorted((out / "runs").glob("*/*/metrics.json"))
            for row in json.loads(path.read_text())["rows"]]
