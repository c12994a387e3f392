"""RTSTRUCT contours to a label map on the image grid.

The rule (see ``docs`` and the reference on DICOM RT I/O): a voxel belongs to a structure iff its centre
lies inside the planar contours of its slice under the even-odd rule, so inner contours cut holes and
islands inside holes come back. Vertices are mapped to *continuous* voxel indices (never rounded), each
contour is assigned to the slice nearest its plane and must lie within a quarter slice of it (a contour
further off belongs to another series' slices, even if the frame of reference is shared). Centres exactly
on an edge follow the half-open (top-left) convention, so a contour along voxel edges is filled exactly.

Each ROI keeps its own frame of reference (StructureSetROISequence's ReferencedFrameOfReferenceUID; a
structure set may reference several frames) and ``rasterise`` refuses an ROI drawn in another frame than
the image's. ROIs are chosen by ``roi_choice.choose_names``, the rule every reader of structures follows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

__all__ = ["Roi", "StructureSet", "read_rtstruct", "select_rois", "rasterise"]

FILLED_TYPES = ("CLOSED_PLANAR", "INTERPOLATED_PLANAR")
CONTOUR_DATA = 0x30060050
SLICE_TOLERANCE = 0.25  # in slices


@dataclass
class Roi:
    number: int
    name: str
    contours: list[np.ndarray] = field(default_factory=list)   # (N, 3) patient coordinates in mm (LPS)
    frame_of_reference: str = ""   # the ROI's own (StructureSetROISequence), else the structure set's first


@dataclass
class StructureSet:
    path: Path
    frame_of_reference: str
    referenced_series: str | None
    rois: list[Roi]

    @property
    def names(self) -> list[str]:
        return [roi.name for roi in self.rois]


def read_rtstruct(path: Path) -> StructureSet:
    """Read the ROIs and their filled planar contours (points, markers and open contours are skipped)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, EOFError) as err:
        raise ValueError(f"cannot read {path}: {err}") from None
    if ds.get("Modality") != "RTSTRUCT":
        raise ValueError(f"{path} is {ds.get('Modality', 'not a DICOM object with a modality')}, not an RTSTRUCT")
    frames = ds.get("ReferencedFrameOfReferenceSequence") or []
    frame = str(frames[0].FrameOfReferenceUID) if frames else ""
    series = None
    for item in frames:
        for study in item.get("RTReferencedStudySequence") or []:
            for referenced in study.get("RTReferencedSeriesSequence") or []:
                series = series or str(referenced.SeriesInstanceUID)
    rois = {int(item.ROINumber): Roi(int(item.ROINumber), str(item.ROIName),
                                     frame_of_reference=str(item.get("ReferencedFrameOfReferenceUID") or frame))
            for item in ds.get("StructureSetROISequence") or []}
    for item in ds.get("ROIContourSequence") or []:
        roi = rois.get(int(item.ReferencedROINumber))
        if roi is None:
            continue
        for contour in item.get("ContourSequence") or []:
            if contour.get("ContourGeometricType") not in FILLED_TYPES:
                continue
            points = _contour_data(contour)
            if points.size >= 9 and points.size % 3 == 0:
                roi.contours.append(points.reshape(-1, 3))
    return StructureSet(Path(path), frame, series, sorted(rois.values(), key=lambda r: r.number))


def _contour_data(contour) -> np.ndarray:
    """ContourData as floats, parsed from the stored text in one go (not one pydicom DSfloat per number)."""
    element = contour.get_item(CONTOUR_DATA)
    if element is None or element.value is None:
        return np.zeros(0)
    value = element.value
    if isinstance(value, bytes):
        text = value.decode("ascii", "replace").strip(" \0")
        return np.array(text.split("\\"), dtype=np.float64) if text else np.zeros(0)
    return np.asarray(value, dtype=np.float64).ravel()


def select_rois(structure_set: StructureSet, pattern: Optional[str]) -> list[Roi]:
    """The ROIs ``roi_choice.choose_names`` picks: named ``pattern`` (case-insensitive), else whose whole name
    matches it as a regex; with no pattern, the only ROI or else those named like a GTV."""
    from .roi_choice import NoMatchingStructure, choose_names

    try:
        chosen = [structure_set.rois[i] for i in choose_names(structure_set.names, pattern)]
    except NoMatchingStructure as err:
        raise ValueError(f"no ROI matches {err.pattern!r}; {structure_set.path.name} has: "
                         + (", ".join(structure_set.names) or "no ROIs")) from None
    empty = [r.name for r in chosen if not r.contours]
    if len(empty) == len(chosen):
        raise ValueError(f"ROI {', '.join(empty)} has no closed planar contours")
    return chosen


def rasterise(rois: Sequence[Roi], image, frame_of_reference: str | None = None) -> np.ndarray:
    """Union of the ROIs as a (z, y, x) uint8 mask on the grid of the SimpleITK ``image``.

    Each ROI is filled with the even-odd rule over all its contours on a slice; several ROIs are united.
    ``frame_of_reference`` (the image's FrameOfReferenceUID; give it whenever the image came from DICOM) is
    compared with each ROI's own frame, and an ROI drawn in another frame is refused: millimetres of another
    frame mean nothing on this image, and only the ROI-level UID says which frame an ROI is in.
    """
    if frame_of_reference:
        for roi in rois:
            if roi.frame_of_reference and roi.frame_of_reference != frame_of_reference:
                raise ValueError(f"ROI {roi.name} is in frame of reference {roi.frame_of_reference}, the image in "
                                 f"{frame_of_reference}: its contours belong to another scan")
    size = image.GetSize()
    matrix = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
    to_index = np.linalg.inv(matrix)
    origin = np.array(image.GetOrigin())
    mask = np.zeros(size[::-1], dtype=bool)
    for roi in rois:
        by_slice: dict[int, list[np.ndarray]] = {}
        for points in roi.contours:
            index = (points - origin) @ to_index.T          # continuous (i, j, k) = (x, y, slice)
            k = float(np.median(index[:, 2]))
            slice_index = int(round(k))
            if np.abs(index[:, 2] - slice_index).max() > SLICE_TOLERANCE:
                raise ValueError(f"ROI {roi.name}: a contour at k = {k:.2f} does not lie on an image slice "
                                 "(contours must be drawn on the image's slices)")
            if not 0 <= slice_index < size[2]:
                raise ValueError(f"ROI {roi.name}: a contour lies outside the image (slice {slice_index} of {size[2]})")
            by_slice.setdefault(slice_index, []).append(index[:, :2])
        for slice_index, polygons in by_slice.items():
            mask[slice_index] |= even_odd_fill(polygons, size[1], size[0])
    return mask.astype(np.uint8)


def even_odd_fill(polygons: Sequence[np.ndarray], rows: int, columns: int) -> np.ndarray:
    """(rows, columns) mask of pixel centres inside the polygons (vertices as continuous (x, y) indices).

    Scanline on every row centre at once: the crossings of all edges of all polygons with the row are
    sorted and paired (1st-2nd, 3rd-4th, ...), which is the even-odd rule over the union of contours.
    Edges count on the half-open interval [y_min, y_max), columns on [x_in, x_out), so no centre is
    counted twice and shared edges cancel.
    """
    starts = np.concatenate([p for p in polygons])
    ends = np.concatenate([np.roll(p, -1, axis=0) for p in polygons])
    y0, y1 = starts[:, 1], ends[:, 1]
    keep = y0 != y1
    x0, y0, x1, y1 = starts[keep, 0], y0[keep], ends[keep, 0], y1[keep]
    low, high = np.minimum(y0, y1), np.maximum(y0, y1)
    first = np.clip(np.ceil(low), 0, rows).astype(np.int64)
    last = np.clip(np.ceil(high), 0, rows).astype(np.int64)          # exclusive
    counts = last - first
    edge = np.repeat(np.arange(len(first)), counts)
    row = np.repeat(first, counts) + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
    t = (row - y0[edge]) / (y1[edge] - y0[edge])
    x = x0[edge] + t * (x1[edge] - x0[edge])
    order = np.lexsort((x, row))
    row, x = row[order], x[order]
    mask = np.zeros((rows, columns), dtype=bool)
    if row.size == 0:
        return mask
    if row.size % 2 or np.any(row[0::2] != row[1::2]):
        raise ValueError("a contour is not closed consistently (odd number of crossings on a row)")
    begin = np.clip(np.ceil(x[0::2]), 0, columns).astype(np.int64)
    end = np.clip(np.ceil(x[1::2]), 0, columns).astype(np.int64)
    change = np.zeros((rows, columns + 1), dtype=np.int32)
    np.add.at(change, (row[0::2], begin), 1)
    np.add.at(change, (row[1::2], end), -1)
    return np.cumsum(change, axis=1)[:, :columns] > 0
