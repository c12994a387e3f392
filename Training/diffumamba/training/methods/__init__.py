"""Training methods (``--method``): supervised, supervised with Diff-CL's high-frequency module (its control arm),
DALE (noisy labels in fuzzy regions) and Diff-CL (semi-supervised)."""

from __future__ import annotations

from .base import Supervised, SupervisedHighFrequency, TrainingMethod

__all__ = ["METHOD_NAMES", "build_method", "TrainingMethod"]

METHOD_NAMES = ("supervised", "supervised-hf", "dale", "diffcl")


def build_method(name: str) -> type[TrainingMethod]:
    """The method class ``name`` names (imported on demand: Diff-CL pulls in the diffusion code)."""
    if name == "supervised":
        return Supervised
    if name == "supervised-hf":
        return SupervisedHighFrequency
    if name == "dale":
        from .dale import Dale

        return Dale
    if name == "diffcl":
        from .diffcl import DiffCL

        return DiffCL
    raise ValueError(f"unknown training method {name!r}; choose one of {', '.join(METHOD_NAMES)}")
