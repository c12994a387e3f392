"""Cases from folders of DICOM: one CT series plus the RTSTRUCT that holds the chosen ROI(s)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from .run import SourceCase

__all__ = ["dicom_cases", "load_dicom_case"]


def dicom_cases(folders: Sequence[Path], roi_pattern: str) -> list[SourceCase]:
    """One case per folder, named after it (characters other than letters, digits, '.', '_', '-' become '_')."""
    cases = []
    for folder in folders:
        name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(folder).resolve().name).lstrip("._-") or "case"
        cases.append(SourceCase(name, lambda folder=folder: load_dicom_case(Path(folder), roi_pattern)))
    return cases


def load_dicom_case(folder: Path, roi_pattern: str):
    """([CT image], label image) with the union of the matching ROIs rasterised on the CT grid."""
    import SimpleITK as sitk

    from ..dicom.rtstruct import rasterise, read_rtstruct, select_rois
    from ..dicom.series import choose_series, read_series, scan_folder

    found = scan_folder(folder)
    if not found.rtstructs:
        raise ValueError(f"no RTSTRUCT in {folder}")
    candidates, reasons = [], []
    for path in found.rtstructs:
        structure_set = read_rtstruct(path)
        try:
            candidates.append((structure_set, select_rois(structure_set, roi_pattern)))
        except ValueError as err:
            reasons.append(str(err))
    if not candidates:
        raise ValueError("; ".join(reasons))
    if len(candidates) > 1:
        raise ValueError(f"{len(candidates)} RTSTRUCTs hold ROIs matching {roi_pattern!r}: "
                         + ", ".join(s.path.name for s, _ in candidates) + "; keep one per case folder")
    structure_set, rois = candidates[0]
    series = choose_series(found, referenced=structure_set.referenced_series)
    if structure_set.frame_of_reference and series.frame_of_reference != structure_set.frame_of_reference:
        raise ValueError(f"the RTSTRUCT's frame of reference {structure_set.frame_of_reference} differs from the "
                         f"CT's {series.frame_of_reference}: its contours do not belong to this image")
    image = read_series(series)
    mask = rasterise(rois, image, series.frame_of_reference)
    if not mask.any():
        raise ValueError(f"ROI {', '.join(r.name for r in rois)} rasterises to an empty mask on the CT grid")
    label = sitk.GetImageFromArray(mask)
    label.CopyInformation(image)
    return [image], label
