"""Which files are cases, and checking that a prediction lies on its reference's grid (label maps are read by
``mask_io.read_label_map``)."""

from __future__ import annotations

from pathlib import Path

from ..geometry import grid_differences
from ..imageio import IMAGE_SUFFIXES

__all__ = ["IMAGE_SUFFIXES", "case_id", "check_same_grid"]



def case_id(path: Path) -> str | None:
    """The file name without its image suffix, or None for files that are not label maps.

    Hidden files (the partial files of a write in progress, macOS ``._`` files) are never cases.
    """
    name = path.name
    if name.startswith("."):
        return None
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return None


def check_same_grid(pred, ref, pred_path: Path, ref_path: Path) -> None:
    """Refuse a prediction that is not on the reference grid (size, spacing, origin, direction)."""
    problems = grid_differences(pred, ref)
    if problems:
        raise ValueError(f"{pred_path.name} is not on the grid of {ref_path.name}: " + "; ".join(problems))
