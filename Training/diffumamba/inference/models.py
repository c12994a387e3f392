"""The checkpoints of one ``predict`` or ``propagate`` run: loaded weights-only, one plan, its inference defaults."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from .predictor import check_same_plan

__all__ = ["Ensemble", "load_ensemble", "check_overlap"]


def check_overlap(overlap: Optional[float]) -> None:
    """Refuse a sliding-window overlap outside [0, 1) (None means the plan's)."""
    if overlap is not None and not 0 <= overlap < 1:
        raise ValueError("--overlap must be in [0, 1)")


@dataclass
class Ensemble:
    networks: list
    plan: dict
    device: object

    def overlap(self, requested: Optional[float]) -> float:
        """``requested``, else the plan's (0.25 for the lung-cpu preset), else nnU-Net's 0.5."""
        check_overlap(requested)
        return requested if requested is not None else self.plan.get("inference", {}).get("overlap", 0.5)

    def crop(self, requested: str) -> str:
        """``auto`` means what the plan says (``lungs`` for the lung-cpu preset), else no crop."""
        crop = self.plan.get("inference", {}).get("crop", "none") if requested == "auto" else requested
        if crop == "lungs" and self.plan["channel_names"][0] != "CT":
            raise ValueError("--crop lungs needs a CT model")
        return crop

    @property
    def label_names(self) -> dict[int, str]:
        return {int(v): k for k, v in self.plan["labels"].items()}


def load_ensemble(paths: Sequence[Path], device: str) -> Ensemble:
    """Every checkpoint named, a model package (``.zip``) counting as all of its folds. Every package is verified
    against its manifest (``package_members``) before anything of it is loaded, on every run."""
    from ..checkpoint import load_model
    from ..devices import resolve_device
    from ..model_package import check_not_renamed_package, is_package, package_members

    resolved = resolve_device(device)
    loaded, names = [], []
    for path in paths:
        if is_package(path):
            for name, raw in package_members(path):
                loaded.append(load_model(Path(path) / name, resolved, raw))
                names.append(f"{path} ({name})")
        else:
            check_not_renamed_package(path)
            loaded.append(load_model(path, resolved))
            names.append(str(path))
    for (_, header), name in zip(loaded, names):
        if not isinstance(header.get("plan"), dict):
            raise ValueError(f"{name} holds weights but no plan (spacing, normalisation, patch): it was not written by "
                             "'diffumamba train', 'package' or 'import-nnunet', so it cannot be run; use one that was")
    plans = [header["plan"] for _, header in loaded]
    check_same_plan(plans)
    return Ensemble([model for model, _ in loaded], plans[0], resolved)
