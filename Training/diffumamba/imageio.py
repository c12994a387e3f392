"""Image files: reading with a message a user can act on, and writing so a file appears whole or not at all."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

__all__ = ["IMAGE_SUFFIXES", "read_scalar_image", "partial_path", "atomic_output", "write_image_atomic"]


def read_scalar_image(path: Path, hint: str = "expected one value per voxel"):
    """The image at ``path``; unreadable files and multi-component (vector/RGB) images raise ValueError.

    SimpleITK's own message is several lines of C++ context; only its last line (the reason) is kept.
    """
    import SimpleITK as sitk

    path = Path(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        raise ValueError(f"cannot read {path.name}: {str(err).strip().splitlines()[-1]}") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"{path.name} has {image.GetNumberOfComponentsPerPixel()} components per voxel; {hint}")
    return image


# Longest first where one ends another (".seg.nrrd" before ".nrrd").
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".seg.nrrd", ".nrrd", ".mha", ".mhd")


def partial_path(path: Path) -> Path:
    """A hidden temporary name beside ``path`` that keeps its image suffix (writers choose the format by it)
    and that dataset readers skip (leading dot)."""
    path = Path(path)
    suffix = next((s for s in IMAGE_SUFFIXES if path.name.endswith(s)), path.suffix)
    return path.with_name(f".{path.name[:len(path.name) - len(suffix)]}.partial{suffix}")


@contextmanager
def atomic_output(path: Path):
    """Yield a temporary path to write; it replaces ``path`` only if the block succeeds."""
    temporary = partial_path(path)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_image_atomic(image, path: Path) -> None:
    """Write a SimpleITK image so that ``path`` appears whole or not at all (format from the suffix)."""
    import SimpleITK as sitk

    with atomic_output(path) as temporary:
        sitk.WriteImage(image, str(temporary), useCompression=True)
