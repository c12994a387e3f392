"""Runs every (fold, seed, network) of an experiment and scores each on its fold's held-out cases.

Fairness is structural: one plan (patch, spacing, features, topology) is made once and only the network
name changes; every network sees the same splits, the same seeded training subset, the same seeds and
the same number of iterations. Each run is scored with its *last* checkpoint on the original image grid
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

from ..data.pipeline import Prepared
from ..files import atomic_write_text

__all__ = ["ExperimentSpec", "run_experiment", "experiment_rows"]


@dataclass
class ExperimentSpec:
    """What is compared and under which budget (recorded in OUT/experiment.json)."""

    networks: list[str]
    baseline: str
    n_folds: int
    folds: list[int]
    seeds: list[int]
    train_fraction: float = 1.0
    group_pattern: Optional[str] = None
    batch_size: int = 2
    nsd_tolerance_mm: float = 2.0
    training: dict = field(default_factory=dict)   # TrainSettings fields except seed

    def __post_init__(self):
        if self.baseline not in self.networks:
            raise ValueError(f"the baseline {self.baseline!r} must be one of the networks {self.networks}")
        if len(set(self.networks)) != len(self.networks):
            raise ValueError("a network is listed twice")
        bad = [f for f in self.folds if not 0 <= f < self.n_folds]
        if bad:
            raise ValueError(f"folds {bad} do not exist with {self.n_folds} folds")


def run_experiment(prepared: Prepared, spec: ExperimentSpec, out: Path, progress: bool = True,
                   log: Callable[[str], None] = print) -> list[dict]:
    """Train and score every run not finished yet; returns all per-case rows."""
    from ..training.splits import fold_cases, load_or_create_splits, subset

    out.mkdir(parents=True, exist_ok=True)
    _record_spec(out / "experiment.json", spec, prepared)
    names = [c.name for c in prepared.cases]
    splits = load_or_create_splits(prepared.dataset.root / "splits_final.json", names, spec.n_folds,
                                   group_pattern=spec.group_pattern)
    rows = []
    for fold in spec.folds:
        train_names, val_names = fold_cases(splits, names, str(fold))
        for seed in spec.seeds:
            chosen = subset(train_names, spec.train_fraction, seed) if spec.train_fraction < 1 else train_names
            cache: dict = {}
            for network in spec.networks:
                log(f"fold {fold}, seed {seed}: {network} on {len(chosen)} case(s), scored on {len(val_names)}")
                rows += _run_one(prepared, spec, network, fold, seed, chosen, val_names, out, cache, progress)
    return rows


def _run_one(prepared: Prepared, spec: ExperimentSpec, network: str, fold: int, seed: int,
             train_names: Sequence[str], val_names: Sequence[str], out: Path, cache: dict, progress: bool) -> list[dict]:
    from ..training.sampling import TrainingCase
    from ..training.trainer import Trainer, TrainSettings

    run_dir = out / "runs" / f"fold{fold}_seed{seed}" / network
    result = run_dir / "metrics.json"
    if result.exists():
        return json.loads(result.read_text())["rows"]
    plan = dataclasses.replace(prepared.plan, network={**prepared.plan.network, "network": network})
    if not cache:
        cache.update({n: TrainingCase.from_cache(prepared.folder, n, seed) for n in train_names})
    meta = {**plan.checkpoint_meta(), "cases": {"fold": fold, "train": list(train_names), "val": list(val_names)}}
    trainer = Trainer(plan.network_config(), [cache[n] for n in train_names], [], run_dir,
                      TrainSettings(**spec.training, seed=seed), batch_size=spec.batch_size, meta=meta)
    trainer.resume()
    trainer.fit(progress=progress)
    rows = _score(trainer, plan, prepared, val_names, spec.nsd_tolerance_mm)
    seconds = _training_seconds(run_dir / "log.csv")
    for row in rows:
        row.update(network=network, fold=fold, seed=seed, train_seconds=seconds)
    atomic_write_text(result, json.dumps({"rows": rows}, indent=1) + "\n")
    return rows


def _score(trainer, plan, prepared: Prepared, val_names: Sequence[str], tolerance_mm: float) -> list[dict]:
    """Predict each held-out case on its original grid and score it per label."""
    from dataclasses import asdict

    from ..data.fingerprint import read_case
    from ..evaluation.metrics import label_metrics
    from ..inference.predictor import predict_label_map

    cases = {c.name: c for c in prepared.cases}
    rows = []
    trainer.network.eval()
    for name in val_names:
        data, label, spacing, _ = read_case(cases[name])
        prediction = predict_label_map(trainer.network, asdict(plan), data, spacing, device=trainer.device)
        for label_name, value in plan.labels.items():
            if value == 0:
                continue
            metrics = label_metrics(prediction == value, label == value, spacing, tolerance_mm)
            rows.append({"case": name, "label": label_name, **metrics})
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
        if previous["spec"] != record["spec"] or previous["plan_hash"] != record["plan_hash"]:
            raise ValueError(f"{path.parent} holds an experiment with other settings; use another --out folder")
        return
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")


def experiment_rows(out: Path) -> list[dict]:
    """Every finished run's rows under ``out`` (to re-print a table without training)."""
    return [row for path in sorted((out / "runs").glob("*/*/metrics.json"))
            for row in json.loads(path.read_text())["rows"]]
