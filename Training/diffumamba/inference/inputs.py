"""What ``diffumamba predict`` accepts: DICOM series folders, image files, or folders of image files."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from ..evaluation.images import IMAGE_SUFFIXES, case_id

__all__ = ["InputCase", "find_inputs", "finite_image"]


@dataclass
class InputCase:
    """One image to segment; ``slices`` (sorted DICOM headers) only when it came from a DICOM series."""

    name: str
    image: object
    modality: Optional[str] = None
    slices: Optional[list] = field(default=None, repr=False)


def find_inputs(paths: Sequence[Path], series_uid: Optional[str] = None, expected_modality: Optional[str] = None,
                replace_nonfinite: bool = False) -> list[tuple[str, Callable[[], InputCase]]]:
    """(case name, loader) for every input; loaders read lazily so a batch starts at once.

    A folder holding a DICOM image series is one case; a folder of image files is a batch (nnU-Net's
    ``_0000`` channel suffix is dropped from case names); a file is one case. A loader refuses an image with
    NaN/Inf voxels (ValueError naming the file and the count), or with ``replace_nonfinite`` replaces them with the
    image's minimum (``predict --replace-nonfinite``).
    """
    from ..dicom.series import scan_folder

    cases = []
    for path in map(Path, paths):
        if path.is_file():
            cases.append((_name(path), lambda path=path: _read_file(path, expected_modality, replace_nonfinite)))
        elif path.is_dir():
            found = scan_folder(path)
            if found.series:
                cases.append((path.resolve().name,
                              lambda path=path, found=found: _read_dicom(path, found, series_uid, expected_modality,
                                                                         replace_nonfinite)))
                continue
            files = [p for p in sorted(path.iterdir()) if p.is_file() and case_id(p)]
            if not files:
                raise ValueError(f"{path} holds neither a DICOM image series nor image files ({', '.join(IMAGE_SUFFIXES)})")
            cases += [(_name(p), lambda p=p: _read_file(p, expected_modality, replace_nonfinite)) for p in files]
        else:
            raise FileNotFoundError(f"input does not exist: {path}")
    names = [name for name, _ in cases]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"several inputs would be written as {', '.join(duplicates)}; rename them")
    return cases


def _name(path: Path) -> str:
    return re.sub(r"_0000$", "", case_id(path) or path.stem)


def finite_image(image, source, replace: bool = False):
    """The SimpleITK ``image`` itself when every voxel is finite; else a ValueError naming ``source`` and the count
    of NaN/Inf voxels, or (``replace``) a copy on the same grid with them set to the image's minimum. One NaN voxel
    would otherwise change the segmentation far away from it (resampling and convolutions spread it)."""
    import numpy as np
    import SimpleITK as sitk

    from ..data.dataset import check_finite

    array = sitk.GetArrayViewFromImage(image)
    if not np.issubdtype(array.dtype, np.floating) or np.isfinite(array).all():
        return image
    fixed = sitk.GetImageFromArray(check_finite(np.asarray(array), source, replace))
    fixed.CopyInformation(image)
    for key in image.GetMetaDataKeys():
        fixed.SetMetaData(key, image.GetMetaData(key))
    return fixed


def _read_file(path: Path, expected_modality: Optional[str], replace_nonfinite: bool = False) -> InputCase:
    import numpy as np
    import SimpleITK as sitk

    from ..imageio import read_scalar_image

    image = read_scalar_image(path, "give a single-channel image")
    if image.GetDimension() != 3:
        raise ValueError(f"{path.name} is {image.GetDimension()}D; expected a 3D volume")
    image = finite_image(image, path, replace_nonfinite)
    if expected_modality == "CT":
        array = sitk.GetArrayViewFromImage(image)
        if float(np.min(array)) > -500:
            raise ValueError(f"{path.name} does not look like a CT in Hounsfield units (no value below -500, no air); "
                             "this model expects CT")
    return InputCase(_name(path), image)


def _read_dicom(path: Path, found, series_uid: Optional[str], expected_modality: Optional[str],
                replace_nonfinite: bool = False) -> InputCase:
    from ..dicom.series import choose_series, read_pixels, sorted_slices

    modalities = tuple(s.modality for s in found.series) if not expected_modality else (expected_modality,)
    info = choose_series(found, uid=series_uid, modalities=modalities)
    if expected_modality and info.modality != expected_modality:
        raise ValueError(f"series {info.uid} is {info.modality}; this model expects {expected_modality}")
    slices = sorted_slices(info, modalities=(info.modality,))
    image = finite_image(read_pixels(slices), f"DICOM series {info.uid} in {path}", replace_nonfinite)
    return InputCase(path.resolve().name, image, info.modality, slices)
