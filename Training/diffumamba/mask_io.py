"""Reading masks: a GTV from whatever the clinic has, and label maps, for every command alike.

``read_mask``: a binary mask on a scan's grid from an RTSTRUCT, a DICOM SEG, a ``.seg.nrrd`` or a label map
(propagation's prior GTV, the current mask of a correction, a grown segmentation). Structures are chosen by name
(``roi``: exact name, else a regex matching the whole name, case-insensitive, as ``convert dicom --roi``); a file
holding a single structure needs no name. Label maps on another grid of the same space (e.g. cropped) are resampled
by nearest neighbour (``mask_on_grid``).

``read_label_map``: an integer label map as it is, on its own grid (``evaluate``, ``export``, ``convert``), where
the caller decides what another grid means.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .dicom.roi_choice import DEFAULT_PATTERN as DEFAULT_ROI
from .imageio import read_scalar_image

__all__ = ["read_mask", "mask_on_grid", "read_label_map", "DEFAULT_ROI"]


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


def read_mask(path: Path, prior, roi: Optional[str] = None, label: Optional[int] = None,
                    what: str = "GTV", allow_empty: bool = False, binary: bool = False) -> np.ndarray:
    """(z, y, x) uint8 mask on the grid of ``prior`` (an ``InputCase``: its image, and its DICOM slices if any).
    ``what`` names the mask in errors; an empty mask is refused unless ``allow_empty``. A label map must hold
    labels (whole numbers >= 0: a CT given as the mask is refused, not read as "> 0"); with ``binary`` only 0 and 1,
    as the masks we write are (a multi-label map would otherwise be merged into one GTV without a word)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} does not exist: {path}")
    name = path.name.lower()
    if name.endswith(".seg.nrrd"):
        mask = _from_seg_nrrd(path, prior.image, roi, what)
    elif _dicom_modality(path) is not None:
        mask = _from_dicom(path, _dicom_modality(path), prior, roi)
    else:
        mask = _from_label_map(path, prior.image, label, what, binary)
    if not mask.any() and not allow_empty:
        raise ValueError(f"the {what} from {path.name} is empty on its scan's grid")
    return mask.astype(np.uint8)


def _dicom_modality(path: Path) -> Optional[str]:
    if path.is_dir():
        return None
    import pydicom

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality"])
    except Exception:  # noqa: BLE001 - not DICOM
        return None
    return str(getattr(header, "Modality", "")) or None


def _choose(names: Sequence[str], roi: Optional[str], source: str) -> list[int]:
    """Indices of the structures to use, by the one rule of ``dicom.roi_choice.choose_names``: by ``roi``, else
    the single one, else those named like a GTV."""
    from .dicom.roi_choice import NoMatchingStructure, choose_names

    try:
        return choose_names(names, roi)
    except NoMatchingStructure as err:
        raise ValueError(f"no structure matches {err.pattern!r} in {source}; it has: {', '.join(names) or 'none'} "
                         "(choose one with --prior-roi)") from None


def _from_dicom(path: Path, modality: str, prior, roi: Optional[str]) -> np.ndarray:
    if prior.slices is None:
        raise ValueError(f"{path.name} is a DICOM {modality}; give the prior scan as its DICOM series folder")
    frame_of_reference = str(getattr(prior.slices[0], "FrameOfReferenceUID", "")) or None
    if modality == "RTSTRUCT":
        from .dicom.rtstruct import rasterise, read_rtstruct

        structure_set = read_rtstruct(path)
        if structure_set.frame_of_reference and frame_of_reference and \
                structure_set.frame_of_reference != frame_of_reference:
            raise ValueError(f"the RTSTRUCT's frame of reference {structure_set.frame_of_reference} differs from the "
                             f"prior scan's {frame_of_reference}: its contours belong to another scan")
        names = [r.name for r in structure_set.rois]
        chosen = [structure_set.rois[i] for i in _choose(names, roi, path.name)]
        if not any(r.contours for r in chosen):
            raise ValueError(f"ROI {', '.join(r.name for r in chosen)} has no closed planar contours")
        return rasterise(chosen, prior.image, frame_of_reference)
    if modality == "SEG":
        from .dicom.seg import read_seg

        labels, segments = read_seg(path, prior.image, frame_of_reference)
        numbers = sorted(segments)
        chosen = [numbers[i] for i in _choose([segments[n] for n in numbers], roi, path.name)]
        return np.isin(labels, chosen)
    raise ValueError(f"{path.name} is a DICOM {modality} object; the prior GTV must be an RTSTRUCT or a SEG")


def _from_seg_nrrd(path: Path, reference, roi: Optional[str], what: str) -> np.ndarray:
    import SimpleITK as sitk
    import slicerio

    try:
        segmentation = slicerio.read_segmentation(str(path))
    except Exception as err:  # noqa: BLE001 - nrrd/slicerio raise several types for a bad file
        raise ValueError(f"cannot read {path.name} as a Slicer segmentation: {err}") from None
    segments = segmentation["segments"]
    chosen = [segments[i] for i in _choose([s.get("name", s["id"]) for s in segments], roi, path.name)]
    voxels = np.asarray(segmentation["voxels"])
    if voxels.ndim == 4:   # several layers: (i, j, k, layer)
        masks = [voxels[..., s.get("layer", 0)] == s["labelValue"] for s in chosen]
    else:
        masks = [voxels == s["labelValue"] for s in chosen]
    mask = np.transpose(np.logical_or.reduce(masks)).astype(np.uint8)          # (k, j, i) = (z, y, x)
    matrix = np.asarray(segmentation["ijkToLPS"], dtype=float)
    spacing = np.linalg.norm(matrix[:3, :3], axis=0)
    image = sitk.GetImageFromArray(mask)
    image.SetOrigin([float(v) for v in matrix[:3, 3]])
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection([float(v) for v in (matrix[:3, :3] / spacing).ravel()])
    return mask_on_grid(image, reference, path.name, what)


def _from_label_map(path: Path, reference, label: Optional[int], what: str, binary: bool) -> np.ndarray:
    import SimpleITK as sitk

    image = read_scalar_image(path, "expected a label map")
    array = sitk.GetArrayFromImage(image)
    _check_labels(array, path, what, binary and label is None)
    if label is not None:
        if not (array == label).any():
            raise ValueError(f"{path.name} has no voxel of label {label}; it has {sorted(np.unique(array).tolist())}")
        array = array == label
    mask = sitk.GetImageFromArray((array > 0).astype(np.uint8))
    mask.CopyInformation(image)
    return mask_on_grid(mask, reference, path.name, what)


def _check_labels(array: np.ndarray, path: Path, what: str, binary: bool) -> None:
    """Refuse a "label map" that holds no labels (negative or fractional values: a CT, a probability map) or,
    with ``binary``, more than 0 and 1. Minimum and maximum only: np.unique would sort a whole CT."""
    low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    fractional = np.issubdtype(array.dtype, np.floating) and bool(np.any(array != np.round(array)))
    if low < 0 or fractional or (binary and high > 1):
        kind = "0/1 mask" if binary else "label map (whole numbers >= 0)"
        raise ValueError(f"{path.name} is not a {kind}: its values run from {low:g} to {high:g}"
                         + (", not all whole numbers" if fractional else "") + f"; give the {what} as a 0/1 label "
                         "map (as predict, correct and the Slicer module write)" + ("" if binary else
                                                                                  " or choose a label"))


def mask_on_grid(mask, reference, source: str, what: str = "GTV") -> np.ndarray:
    """``mask`` on ``reference``'s grid: as is when the grids agree, else nearest-neighbour resampled."""
    import SimpleITK as sitk

    from .geometry import grid_differences

    if not grid_differences(mask, reference):
        return sitk.GetArrayFromImage(mask) > 0
    moved = sitk.GetArrayFromImage(sitk.Resample(mask, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0)) > 0
    if not moved.any() and sitk.GetArrayViewFromImage(mask).any():
        raise ValueError(f"the {what} in {source} lies outside its scan (another physical space: was it drawn on "
                         "another scan?)")
    return moved
