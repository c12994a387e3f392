"""Finding and reading DICOM image series, refusing the series a planning system would mis-place.

pydicom reads the headers (fast, without pixels) to group files by series and to check the geometry;
SimpleITK reads the pixels (rescaled to HU) from the files in the order we established. Slices are
sorted by their position along the slice normal, never by InstanceNumber or SliceLocation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

DUPLICATE_TOLERANCE_MM = 0.01   # two slices closer than this along the normal are at the same position

__all__ = ["SeriesInfo", "DicomFolder", "scan_folder", "choose_series", "sorted_slices", "read_series", "read_pixels"]


@dataclass(frozen=True)
class SeriesInfo:
    uid: str
    modality: str
    description: str
    frame_of_reference: str
    files: tuple[Path, ...]

    def describe(self) -> str:
        return f"{self.uid} ({self.modality}, {len(self.files)} file(s){', ' + self.description if self.description else ''})"


@dataclass(frozen=True)
class DicomFolder:
    """What a folder holds: image series and the paths of RT structure sets."""

    series: tuple[SeriesInfo, ...]
    rtstructs: tuple[Path, ...]


def scan_folder(folder: Path) -> DicomFolder:
    """Every DICOM file under ``folder`` (recursively), grouped; files that are not DICOM are ignored."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"DICOM folder does not exist: {folder}")
    groups: dict[str, list] = {}
    rtstructs = []
    for root, _, names in os.walk(folder):
        for name in sorted(names):
            path = Path(root) / name
            try:
                header = pydicom.dcmread(path, stop_before_pixels=True)
            except (InvalidDicomError, OSError, EOFError):
                continue
            modality = str(header.get("Modality", ""))
            if modality == "RTSTRUCT":
                rtstructs.append(path)
            elif "ImagePositionPatient" in header and "SeriesInstanceUID" in header:
                groups.setdefault(str(header.SeriesInstanceUID), []).append((path, header))
    series = tuple(SeriesInfo(uid, str(items[0][1].get("Modality", "")), str(items[0][1].get("SeriesDescription", "")),
                              str(items[0][1].get("FrameOfReferenceUID", "")), tuple(p for p, _ in items))
                   for uid, items in sorted(groups.items()))
    return DicomFolder(series, tuple(sorted(rtstructs)))


def choose_series(found: DicomFolder, uid: Optional[str] = None, referenced: Optional[str] = None,
                  modalities: Sequence[str] = ("CT",)) -> SeriesInfo:
    """The series named by ``uid``, else the one an RTSTRUCT references, else the only one of ``modalities``."""
    if uid:
        chosen = [s for s in found.series if s.uid == uid]
        if not chosen:
            raise ValueError(f"no series {uid}; the folder holds: " + "; ".join(s.describe() for s in found.series))
        return chosen[0]
    if referenced:
        chosen = [s for s in found.series if s.uid == referenced]
        if chosen:
            return chosen[0]
    candidates = [s for s in found.series if s.modality in modalities]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise ValueError(f"no {'/'.join(modalities)} image series found" +
                         (f"; the folder holds: {'; '.join(s.describe() for s in found.series)}" if found.series else ""))
    raise ValueError(f"{len(candidates)} {'/'.join(modalities)} series found, choose one by UID: "
                     + "; ".join(s.describe() for s in candidates))


def sorted_slices(info: SeriesInfo, modalities: Sequence[str] = ("CT",), spacing_tolerance: float = 0.01) -> list:
    """The series' headers (no pixels) ordered along the slice normal, after checking modality, orientation
    and slice spacing.

    Refused: another modality, mixed orientations or sizes, gantry tilt (slices not stacked along their
    normal), a single slice, duplicated slices (two files at one position, both named), and missing or irregular slices (gap deviating from the median by more than
    ``spacing_tolerance`` of it), with the positions of the offending gap in the message. Each header gets a
    ``filename`` attribute (its path).
    """
    import pydicom

    if info.modality not in modalities:
        raise ValueError(f"series {info.uid} is {info.modality or 'without modality'}, expected {'/'.join(modalities)}")
    headers = []
    for path in info.files:
        header = pydicom.dcmread(path, stop_before_pixels=True)
        header.filename = str(path)
        headers.append(header)
    orientations = np.array([[float(v) for v in h.ImageOrientationPatient] for h in headers])
    if np.abs(orientations - orientations[0]).max() > 1e-4:
        raise ValueError(f"series {info.uid} mixes slice orientations")
    if len({(int(h.Rows), int(h.Columns)) for h in headers}) != 1:
        raise ValueError(f"series {info.uid} mixes image sizes")
    if len(headers) < 2:
        raise ValueError(f"series {info.uid} has a single slice; a volume needs at least two")
    normal = np.cross(orientations[0, :3], orientations[0, 3:])
    positions = np.array([[float(v) for v in h.ImagePositionPatient] for h in headers])
    order = np.argsort(positions @ normal, kind="stable")
    positions = positions[order]
    along = positions @ normal
    gaps = np.diff(along)
    same = np.flatnonzero(gaps <= DUPLICATE_TOLERANCE_MM)
    if same.size:
        i = int(same[0])
        raise ValueError(f"series {info.uid} has a duplicated slice: two files at the same position "
                         f"({along[i]:.2f} mm along the slice normal): {headers[order[i]].filename} and "
                         f"{headers[order[i + 1]].filename}" + (f" ({same.size} such pairs)" if same.size > 1 else ""))
    median = float(np.median(gaps))
    bad = np.flatnonzero(np.abs(gaps - median) > spacing_tolerance * median)
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"series {info.uid} has irregular slice spacing (missing slice?): gap of {gaps[i]:.3f} mm "
                         f"between {along[i]:.2f} and {along[i + 1]:.2f} mm, the usual gap is {median:.3f} mm")
    drift = positions - positions[0] - np.outer(along - along[0], normal)
    if np.abs(drift).max() > 0.01 * median + 1e-3:
        raise ValueError(f"series {info.uid} is not stacked along its slice normal (gantry tilt?); resample it first")
    return [headers[i] for i in order]


def read_series(info: SeriesInfo, modalities: Sequence[str] = ("CT",), spacing_tolerance: float = 0.01):
    """The series as a SimpleITK image (pixels rescaled, e.g. to HU), after the checks of ``sorted_slices``."""
    return read_pixels(sorted_slices(info, modalities, spacing_tolerance))


def read_pixels(slices: Sequence):
    """The image of headers already checked and ordered by ``sorted_slices``."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([h.filename for h in slices])
    try:
        return reader.Execute()
    except RuntimeError as err:
        raise ValueError(f"cannot read the pixels of series {slices[0].SeriesInstanceUID}: "
                         f"{str(err).strip().splitlines()[-1]}") from None
