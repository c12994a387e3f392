"""Reading one image file with SimpleITK and a message a user can act on."""

from __future__ import annotations

from pathlib import Path

__all__ = ["read_scalar_image", "write_image_atomic"]


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


def write_image_atomic(image, path: Path) -> None:
    """Write a SimpleITK image so that ``path`` appears whole or not at all (format from the suffix)."""
    import os

    import SimpleITK as sitk

    path = Path(path)
    suffix = next((s for s in (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha") if path.name.endswith(s)), path.suffix)
    temporary = path.with_name(f".{path.name[:-len(suffix)]}.partial{suffix}")
    try:
        sitk.WriteImage(image, str(temporary), useCompression=True)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
