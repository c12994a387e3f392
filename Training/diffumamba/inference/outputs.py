"""Writing one prediction in the formats a clinic needs, every file on the input's grid and atomic."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .inputs import InputCase
from .predictor import Prediction

__all__ = ["FORMATS", "write_prediction", "write_dicom_masks", "output_paths"]

FORMATS = ("nifti", "nrrd", "seg.nrrd", "dicom-seg", "rtstruct")
DICOM_FORMATS = ("dicom-seg", "rtstruct")
COLOR = (255, 0, 0)


def output_paths(out: Path, name: str, formats: Sequence[str], probabilities: bool = False,
                 uncertainty: bool = False) -> dict[str, Path]:
    """What ``write_prediction`` may write for case ``name``, by format (and ``probabilities``/``uncertainty``): one
    list of names, so a run can refuse before any work to replace what is there (``files.refuse_existing``)."""
    suffixes = {"nifti": ".nii.gz", "nrrd": ".nrrd", "seg.nrrd": ".seg.nrrd", "dicom-seg": "_seg.dcm",
                "rtstruct": "_rtstruct.dcm"}
    paths = {fmt: Path(out) / f"{name}{suffixes[fmt]}" for fmt in FORMATS if fmt in formats}
    if probabilities:
        paths["probabilities"] = Path(out) / f"{name}_probabilities.nii.gz"
    if uncertainty:
        paths["uncertainty"] = Path(out) / f"{name}_uncertainty.nii.gz"
    return paths


def write_prediction(case: InputCase, prediction: Prediction, out: Path, formats: Sequence[str],
                     label_names: dict[int, str], warn: Callable[[str], None] = print) -> list[Path]:
    """Write ``prediction`` of ``case`` into ``out``; returns the files written, each verified.

    DICOM SEG and RTSTRUCT reference the input series and need a DICOM input; an empty prediction (no
    tumour found) is written as a label map only, since neither DICOM object can hold an empty structure.
    If one file fails, the case's other files are removed: a case is written whole or not at all.
    """
    if any(f in DICOM_FORMATS for f in formats) and case.slices is None:
        raise ValueError(f"{case.name}: DICOM SEG and RTSTRUCT outputs need a DICOM input series")
    written: list[Path] = []
    try:
        _write_all(case, prediction, out, formats, label_names, warn, written)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return written


def _write_all(case, prediction, out, formats, label_names, warn, written) -> None:
    """Append each file to ``written`` before writing it, so a failure removes every file of the case."""
    import SimpleITK as sitk

    from ..imageio import write_image_atomic

    def image_on_input_grid(array, vector=False):
        image = sitk.GetImageFromArray(array, isVector=vector)
        image.CopyInformation(case.image)
        return image

    labels = prediction.labels.astype(np.uint8)
    paths = output_paths(out, case.name, formats, prediction.probabilities is not None,
                         prediction.uncertainty is not None)
    for fmt in ("nifti", "nrrd"):
        if fmt in formats:
            written.append(paths[fmt])
            write_image_atomic(image_on_input_grid(labels), written[-1])
    present = {v: n for v, n in label_names.items() if v != 0 and (labels == v).any()}
    if "seg.nrrd" in formats:
        from .seg_nrrd import write_seg_nrrd

        written.append(paths["seg.nrrd"])
        write_seg_nrrd(labels, {v: n for v, n in label_names.items() if v != 0}, case.image, written[-1],
                       colors={v: COLOR for v in label_names})
    if not present and any(f in DICOM_FORMATS for f in formats):
        warn(f"{case.name}: nothing segmented; no DICOM SEG or RTSTRUCT written")
    elif "dicom-seg" in formats:
        from ..dicom.seg import write_seg

        written.append(paths["dicom-seg"])
        write_seg(labels, present, case.slices, written[-1], colors={v: COLOR for v in present},
                  software_version=_version())
    if present and "rtstruct" in formats:
        from ..dicom.rtstruct_writer import RoiMask, write_rtstruct

        written.append(paths["rtstruct"])
        write_rtstruct([RoiMask(name, labels == value, COLOR) for value, name in present.items()], case.slices,
                       written[-1])
    if prediction.probabilities is not None:
        written.append(paths["probabilities"])
        foreground = prediction.probabilities[1:].astype(np.float32)     # one map per foreground class
        if len(foreground) == 1:
            write_image_atomic(image_on_input_grid(foreground[0]), written[-1])
        else:
            write_image_atomic(image_on_input_grid(np.moveaxis(foreground, 0, -1), vector=True), written[-1])
    if prediction.uncertainty is not None:
        written.append(paths["uncertainty"])
        write_image_atomic(image_on_input_grid(prediction.uncertainty.astype(np.float32)), written[-1])


def write_dicom_masks(case: InputCase, masks: Sequence[tuple[str, np.ndarray]], out: Path, formats: Sequence[str],
                      warn: Callable[[str], None] = print) -> list[Path]:
    """Write named binary masks (z, y, x on the case's DICOM grid) as DICOM: RTSTRUCT with one ROI per mask and
    SEG with one segment per mask, so overlapping structures each keep all their voxels (a label map cannot).
    An empty mask is left out (``warn``); all empty is an error. Written whole or not at all, like
    ``write_prediction``."""
    if case.slices is None:
        raise ValueError(f"{case.name}: DICOM SEG and RTSTRUCT outputs need a DICOM input series")
    unknown = [f for f in formats if f not in DICOM_FORMATS]
    if unknown:
        raise ValueError(f"write_dicom_masks writes only {', '.join(DICOM_FORMATS)}, not {', '.join(unknown)}")
    present = []
    for name, mask in masks:
        if np.asarray(mask).any():
            present.append((name, np.asarray(mask, dtype=bool)))
        else:
            warn(f"{case.name}: {name} is empty and is left out (DICOM cannot hold an empty structure)")
    if not present:
        raise ValueError(f"{case.name}: every structure is empty; neither RTSTRUCT nor SEG can hold an empty one")
    paths = output_paths(out, case.name, formats)
    written: list[Path] = []
    try:
        if "dicom-seg" in formats:
            from ..dicom.seg import write_seg_masks

            written.append(paths["dicom-seg"])
            write_seg_masks(present, case.slices, written[-1], colors=[COLOR] * len(present),
                            software_version=_version())
        if "rtstruct" in formats:
            from ..dicom.rtstruct_writer import RoiMask, write_rtstruct

            written.append(paths["rtstruct"])
            write_rtstruct([RoiMask(name, mask, COLOR) for name, mask in present], case.slices, written[-1])
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return written


def _version() -> str:
    from .. import __version__

    return __version__
