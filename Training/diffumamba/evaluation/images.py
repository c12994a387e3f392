"""Reading label maps and checking that a prediction lies on its reference's grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..geometry import grid_differences
from ..imageio import IMAGE_SUFFIXES, read_scalar_image

__all__ = ["IMAGE_SUFFIXES", "case_id", "read_label_map", "check_same_grid"]



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


def read_label_map(path: Path):
    """Read an integer label map with SimpleITK; a clear error for unreadable or non-integer files."""
    import SimpleITK as sitk

    image = read_scalar_image(path, "expected a single-component label map")
    array = sitk.GetArrayFromImage(image)
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.equal(np.mod(array, 1), 0)):
            raise ValueError(f"{path} holds non-integer values; expected a label map")
        array = array.astype(np.int32)
    return image, array


def check_same_grid(pred, ref, pred_path: Path, ref_path: Path) -> None:
    """Refuse a prediction that is not on the reference grid (size, spacing, origin, direction)."""
    problems = grid_differences(pred, ref)
    if problems:
        raise ValueError(f"{pred_path.name} is not on the grid of {ref_path.name}: " + "; ".join(problems))
