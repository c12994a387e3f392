"""Preprocessed cases on disk, keyed by the plan's hash, so a second run skips the work.

    OUT/plan_<hash12>/plan.json
    OUT/plan_<hash12>/cases/<case>.npz    data (C, z, y, x) float32, label (z, y, x) int16
    OUT/plan_<hash12>/cases/<case>.json   CaseProperties (to restore predictions onto the input grid)

Each file is written atomically, so an interrupted run resumes where it stopped and never leaves a
half-written case behind.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np

from ..files import atomic_write_bytes, atomic_write_text
from .dataset import Case
from .fingerprint import read_case
from .plan import Plan
from .preprocessing import CaseProperties, preprocess_case

__all__ = ["plan_folder", "preprocess_cases", "load_case"]


def plan_folder(out_root: Path, plan: Plan) -> Path:
    return Path(out_root) / f"plan_{plan.hash()[:12]}"


def preprocess_cases(cases: list[Case], plan: Plan, out_root: Path,
                     progress: Optional[Callable[[Iterable], Iterable]] = None) -> tuple[Path, int]:
    """Preprocess every case not yet in the cache; returns (plan folder, number of cases computed now)."""
    folder = plan_folder(out_root, plan)
    (folder / "cases").mkdir(parents=True, exist_ok=True)
    plan_file = folder / "plan.json"
    if not plan_file.exists():
        atomic_write_text(plan_file, plan.to_json() + "\n")
    todo = [c for c in cases if not (folder / "cases" / f"{c.name}.json").exists()]
    for case in (progress(todo) if progress else todo):
        data, label, spacing, _ = read_case(case)
        out, out_label, properties = preprocess_case(data, label, spacing, plan.target_spacing, plan.channel_names,
                                                     plan.intensities, plan.image_order, plan.linear_labels)
        buffer = io.BytesIO()
        arrays = {"data": out.astype(np.float32)}
        if out_label is not None:
            arrays["label"] = out_label.astype(np.int16)
        np.savez(buffer, **arrays)
        atomic_write_bytes(folder / "cases" / f"{case.name}.npz", buffer.getvalue())
        # The properties file is written last: its presence marks the case as complete.
        atomic_write_text(folder / "cases" / f"{case.name}.json", json.dumps(properties.to_dict()) + "\n")
    return folder, len(todo)


def load_case(folder: Path, name: str) -> tuple[np.ndarray, Optional[np.ndarray], CaseProperties]:
    with np.load(Path(folder) / "cases" / f"{name}.npz") as arrays:
        data = arrays["data"]
        label = arrays["label"] if "label" in arrays else None
    properties = CaseProperties.from_dict(json.loads((Path(folder) / "cases" / f"{name}.json").read_text()))
    return data, label, properties
