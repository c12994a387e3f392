"""Dataset -> fingerprint -> plan -> cached preprocessed cases: the shared front of preprocess and train."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from ..files import atomic_write_text
from .cache import preprocess_cases, source_signatures
from .dataset import Case, RawDataset
from .fingerprint import compute_fingerprint, fingerprint_hash
from .plan import Plan, make_plan

__all__ = ["Prepared", "prepare"]


@dataclass
class Prepared:
    dataset: RawDataset
    cases: list[Case]
    plan: Plan
    folder: Path
    computed: int
    fingerprint_file: Path


def prepare(dataset_path: Path, out: Path, network: str = "diffumamba", memory_gb: float = 8.0,
            max_patch: Optional[Sequence[int]] = None, amp: bool = True, base_features: int = 32,
            max_features: int = 320, show_progress: bool = True, target_spacing: Optional[Sequence[float]] = None,
            inference: Optional[dict] = None, task: str = "auto",
            patch_size: Optional[Sequence[int]] = None) -> Prepared:
    """Fingerprint (cached), plan and preprocess (cached) a dataset.

    ``task``: "segmentation", "propagation" (the dataset must hold current scan, prior scan and prior GTV
    channels, as ``convert longitudinal``/``convert simulate`` write them), "correction" (any segmentation
    dataset: the click channels are made while training) or "auto": dataset.json's "task".
    """
    from tqdm import tqdm

    def progress(desc):
        return lambda items: tqdm(items, desc=desc, unit="case", disable=not show_progress)

    dataset = RawDataset(dataset_path)
    task = dataset.meta.get("task", "segmentation") if task == "auto" else task
    if task not in ("segmentation", "propagation", "correction"):
        raise ValueError(f"unknown task {task!r}")
    if task == "propagation" and (dataset.num_channels != 3 or dataset.channel_names[2] != "noNorm"):
        raise ValueError(f"{dataset_path}: a propagation dataset has 3 channels (current scan, prior scan, prior GTV "
                         f"as 'noNorm'); this one has {dataset.channel_names}. Make one with 'diffumamba convert "
                         "longitudinal' or 'convert simulate'")
    cases = dataset.training_cases()
    if max_patch and len(max_patch) != 3:
        raise ValueError("--max-patch needs 3 numbers (z y x)")
    out.mkdir(parents=True, exist_ok=True)
    fingerprint_file = out / "fingerprint.json"
    fingerprint = json.loads(fingerprint_file.read_text()) if fingerprint_file.exists() else None
    # the intensity figures the plan normalises with must follow the raw files, not only the case names: their
    # signatures live beside the fingerprint (not in it, so the plan's hash changes only when the figures do)
    sources_file = out / "fingerprint_sources.json"
    sources = {case.name: source_signatures(case) for case in cases}
    recorded = json.loads(sources_file.read_text()) if sources_file.exists() else None
    if fingerprint is None or fingerprint.get("cases") != [c.name for c in cases] or recorded != sources:
        fingerprint = compute_fingerprint(dataset, cases, progress=progress("fingerprint"))
        atomic_write_text(fingerprint_file, json.dumps(fingerprint, indent=2) + "\n")
        atomic_write_text(sources_file, json.dumps(sources, indent=1) + "\n")
    plan = make_plan(fingerprint, fingerprint_hash(fingerprint), network, 3, memory_gb, max_patch=max_patch,
                     mixed_precision=amp, base_features=base_features, max_features=max_features,
                     target_spacing=target_spacing, inference=inference, task=task, patch_size=patch_size)
    folder, computed = preprocess_cases(cases, plan, out, progress=progress("preprocess"))
    return Prepared(dataset, cases, plan, folder, computed, fingerprint_file)
