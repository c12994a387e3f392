"""Label masks to a DICOM RTSTRUCT that references the CT series they were drawn on.

Contours run along voxel *edges* (marching squares at iso 0.5 on each slice, padded by one voxel so ROIs
touching the field of view still close), not through voxel centres: then every centre is half a voxel from
the polygon, any centre-rule reader (ours, SlicerRT, a planning system) recovers exactly the same voxels,
and the polygon area a planning system integrates equals the voxel area. Vertices are simplified to
within 0.1 voxel, which changes no rasterised voxel and roughly halves the file. The object is marked
unapproved and AI-generated; it is written atomically.

Sub-voxel islands are dropped, with a warning that counts them: a voxel with no in-plane 4-neighbour in its
ROI is its own contour, a diamond through its edge midpoints enclosing half a voxel (every larger island
encloses at least 1.5 voxels). A model's speckle can hold hundreds of thousands of them, and a planning system
would have to import each as a structure contour. Holes are kept. An ROI made only of such islands is written
as it is (with the warning), rather than lost.

Encoding: Implicit VR Little Endian, the transfer syntax every DICOM application must accept, because its
32-bit value lengths hold any ContourData. In Explicit VR a DS value has a 16-bit length, so a contour of more
than about 2,400 vertices (over 64 KB of text) cannot be written as DS (pydicom falls back to VR UN, which our
reader and others read as no contour). Splitting such a contour would change its even-odd meaning.

Speed: the ContourSequence of each ROI is encoded directly as Implicit VR bytes, and all coordinates of an ROI
are formatted to decimal text at once in numpy (no Python object per vertex or contour item); pydicom writes
the rest of the object and copies those bytes through.
"""

from __future__ import annotations

import datetime
import io
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..files import atomic_write_bytes

__all__ = ["RoiMask", "mask_contours", "write_rtstruct", "sub_voxel_islands", "format_decimal_strings",
           "copy_deidentification"]

RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
PATIENT_AND_STUDY = ("SpecificCharacterSet", "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                     "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName",
                     "StudyID", "StudyDescription")
TYPE_2_PATIENT_AND_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                            "ReferringPhysicianName", "StudyID", "AccessionNumber")
SHORT_STRING = 16      # SH (Study ID, Accession Number): some exports copy longer values, which are invalid
DECIMALS = 3           # ContourData in mm to 1 micrometre
UNKNOWN_DEIDENTIFICATION = "not recorded in the source images"
SIMPLIFY_ABOVE = 8     # vertices (after removing collinear ones) above which Douglas-Peucker simplifies a contour


@dataclass
class RoiMask:
    """One structure to write: its name, (z, y, x) mask on the CT grid, display colour and RT type."""

    name: str
    mask: np.ndarray
    color: tuple[int, int, int] = (255, 0, 0)
    interpreted_type: str = "GTV"


def mask_contours(mask_slice: np.ndarray, tolerance: float = 0.1) -> list[np.ndarray]:
    """Closed voxel-edge contours of one 2D slice as (N, 2) continuous (x, y) indices, without the repeated end.

    Collinear vertices (marching squares puts one on every voxel edge) are removed for all contours at once;
    only contours that still have more than ``SIMPLIFY_ABOVE`` vertices go through Douglas-Peucker
    (``approximate_polygon``, ``tolerance`` voxels), whose Python-level cost per call would dominate speckle.
    """
    from skimage.measure import approximate_polygon, find_contours

    padded = np.pad(np.asarray(mask_slice, dtype=np.float32), 1)
    found = [c[:-1] if len(c) > 1 and (c[0] == c[-1]).all() else c for c in find_contours(padded, 0.5)]
    found = [c for c in found if len(c) >= 3]
    if not found:
        return []
    points = np.concatenate(found)
    lengths = np.array([len(c) for c in found])
    starts = np.cumsum(lengths) - lengths
    index = np.arange(len(points))
    owner = np.repeat(np.arange(len(found)), lengths)
    previous = np.where(index == starts[owner], index + lengths[owner] - 1, index - 1)
    following = np.where(index == starts[owner] + lengths[owner] - 1, starts[owner], index + 1)
    incoming, outgoing = points - points[previous], points[following] - points
    keep = np.abs(incoming[:, 0] * outgoing[:, 1] - incoming[:, 1] * outgoing[:, 0]) > 1e-9
    kept_lengths = np.bincount(owner[keep], minlength=len(found))
    contours = []
    for contour in np.split(points[keep], np.cumsum(kept_lengths)[:-1]):
        if tolerance > 0 and len(contour) > SIMPLIFY_ABOVE:
            closed = approximate_polygon(np.concatenate([contour, contour[:1]]), tolerance)
            contour = closed[:-1] if (closed[0] == closed[-1]).all() else closed
        if len(contour) >= 3:
            contours.append(contour[:, ::-1] - 1.0)           # (row, col) of the padded slice -> (x, y)
    return contours


def sub_voxel_islands(mask: np.ndarray) -> np.ndarray:
    """The voxels of a (z, y, x) mask with no in-plane 4-neighbour: each would be a contour enclosing half a voxel."""
    mask = np.asarray(mask, dtype=bool)
    padded = np.pad(mask, ((0, 0), (1, 1), (1, 1)))
    neighbours = padded[:, :-2, 1:-1] | padded[:, 2:, 1:-1] | padded[:, 1:-1, :-2] | padded[:, 1:-1, 2:]
    return mask & ~neighbours


def format_decimal_strings(values: np.ndarray, decimals: int = DECIMALS) -> tuple[bytes, np.ndarray]:
    """``values`` as DICOM DS text with ``decimals`` decimals, each followed by a backslash, built in numpy.

    Returns (text, end) where ``end[i]`` is the offset just past value ``i`` (before its backslash), so the
    values ``a..b`` are ``text[end[a - 1] + 1:end[b]]`` (from 0 when ``a`` is 0).
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        return b"", np.zeros(0, dtype=np.int64)
    if not np.isfinite(values).all():
        raise ValueError("contour coordinates must be finite")
    scaled = np.rint(values * 10 ** decimals).astype(np.int64)
    negative = scaled < 0
    magnitude = np.abs(scaled)
    whole = magnitude // 10 ** decimals
    whole_digits = np.ones(values.size, dtype=np.int64)
    limit = int(whole.max())
    power = 10
    while power <= limit:
        whole_digits += whole >= power
        power *= 10
    digits_max = int(whole_digits.max())
    if digits_max + decimals + 2 > 16:
        raise ValueError("a contour coordinate is too large for a DICOM decimal string")
    width = 1 + digits_max + 1 + decimals + 1          # sign, whole digits, '.', decimals, backslash
    chars = np.full((values.size, width), ord(" "), dtype=np.uint8)
    chars[:, -1] = ord("\\")
    rest = magnitude.copy()
    for column in range(width - 2, width - 2 - decimals, -1):      # decimals, right to left
        chars[:, column] = ord("0") + rest % 10
        rest //= 10
    chars[:, width - 2 - decimals] = ord(".")
    for place in range(digits_max):                                  # whole digits, right to left
        column = width - 3 - decimals - place
        present = place < whole_digits
        chars[present, column] = ord("0") + (rest[present] % 10)
        rest //= 10
    sign_column = width - 3 - decimals - whole_digits
    chars[np.flatnonzero(negative), sign_column[negative]] = ord("-")
    keep = chars != ord(" ")
    length = keep.sum(axis=1)                                       # characters including the backslash
    end = np.cumsum(length) - 1
    return chars[keep].tobytes(), end


def copy_deidentification(source, target) -> None:
    """Patient Identity Removed and how, from the CT: when the CT says YES but not how (as TCIA's LUNG1 does),
    De-identification Method (Type 1C then) says that the method is not recorded rather than inventing one."""
    if str(source.get("PatientIdentityRemoved", "")).upper() != "YES":
        return
    target.PatientIdentityRemoved = "YES"
    for keyword in ("DeidentificationMethod", "DeidentificationMethodCodeSequence"):
        if source.get(keyword):
            setattr(target, keyword, source.data_element(keyword).value)
    if not target.get("DeidentificationMethod") and not target.get("DeidentificationMethodCodeSequence"):
        target.DeidentificationMethod = UNKNOWN_DEIDENTIFICATION


def _element(group: int, element: int, value: bytes, pad: bytes = b" ") -> bytes:
    """One Implicit VR Little Endian data element (tag, 32-bit length, value padded to even length)."""
    if len(value) % 2:
        value += pad
    return struct.pack("<HHI", group, element, len(value)) + value


def _item(content: bytes) -> bytes:
    return struct.pack("<HHI", 0xFFFE, 0xE000, len(content)) + content


def _contour_sequence(contours: list[tuple[bytes, int, bytes]]) -> bytes:
    """ContourSequence items, each (image reference item, number of points, ContourData text), as raw bytes."""
    geometric_type = _element(0x3006, 0x0042, b"CLOSED_PLANAR")
    return b"".join(
        _item(_element(0x3006, 0x0016, reference) + geometric_type + _element(0x3006, 0x0046, str(count).encode())
              + _element(0x3006, 0x0050, data))
        for reference, count, data in contours)


def write_rtstruct(rois: Sequence[RoiMask], slices: Sequence, path: Path, label: str = "DiffUMambaSeg",
                   algorithm: str = "AUTOMATIC") -> None:
    """Write ``rois`` as an RTSTRUCT referencing the CT series whose headers are ``slices`` (in slice order,
    as ``series.sorted_slices`` returns them). Sub-voxel islands are dropped with a warning (see the module)."""
    import pydicom
    from pydicom.dataelem import RawDataElement
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence as DicomSequence
    from pydicom.tag import Tag
    from pydicom.uid import ImplicitVRLittleEndian, generate_uid

    first = slices[0]
    shape = (len(slices), int(first.Rows), int(first.Columns))
    for roi in rois:
        if roi.mask.shape != shape:
            raise ValueError(f"ROI {roi.name}: mask shape {roi.mask.shape} is not the CT's {shape}")
        if not roi.mask.any():
            raise ValueError(f"ROI {roi.name} is empty; an RTSTRUCT needs at least one contour")
    row_direction = np.array([float(v) for v in first.ImageOrientationPatient[:3]])
    column_direction = np.array([float(v) for v in first.ImageOrientationPatient[3:]])
    row_spacing, column_spacing = (float(v) for v in first.PixelSpacing)   # between rows, between columns
    now = datetime.datetime.now()

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RT_STRUCTURE_SET_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    for keyword in PATIENT_AND_STUDY:
        if keyword in first:
            setattr(ds, keyword, first.data_element(keyword).value)
    for keyword in TYPE_2_PATIENT_AND_STUDY:                # present, if empty, even when the CT lacks them
        if keyword not in ds:
            setattr(ds, keyword, "")
    copy_deidentification(first, ds)
    for keyword in ("StudyID", "AccessionNumber"):          # SH: an over-long copied value is invalid
        if keyword in ds and ds[keyword].value and len(str(ds[keyword].value)) > SHORT_STRING:
            setattr(ds, keyword, str(ds[keyword].value)[:SHORT_STRING])
    ds.SOPClassUID, ds.SOPInstanceUID = RT_STRUCTURE_SET_STORAGE, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = "RTSTRUCT", generate_uid(), 999
    ds.SeriesDescription = "DiffUMambaSeg AI contours - not clinically approved"
    ds.OperatorsName = ""                                   # Type 2 (RT Series): no human operator
    ds.Manufacturer, ds.ManufacturerModelName = "DiffUMambaSeg", "diffumamba"
    ds.InstanceCreationDate = ds.StructureSetDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = ds.StructureSetTime = now.strftime("%H%M%S")
    ds.StructureSetLabel, ds.ApprovalStatus = label[:16], "UNAPPROVED"
    ds.FrameOfReferenceUID = first.FrameOfReferenceUID
    ds.PositionReferenceIndicator = first.get("PositionReferenceIndicator", "")   # Type 2 (Frame of Reference)

    def image_reference(header):
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = header.SOPClassUID, header.SOPInstanceUID
        return item

    def image_reference_bytes(header) -> bytes:
        return _item(_element(0x0008, 0x1150, str(header.SOPClassUID).encode(), b"\0")
                     + _element(0x0008, 0x1155, str(header.SOPInstanceUID).encode(), b"\0"))

    series = Dataset()
    series.SeriesInstanceUID = first.SeriesInstanceUID
    series.ContourImageSequence = DicomSequence([image_reference(h) for h in slices])
    study = Dataset()
    study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management (as planning systems write)
    study.ReferencedSOPInstanceUID = first.StudyInstanceUID
    study.RTReferencedSeriesSequence = DicomSequence([series])
    frame = Dataset()
    frame.FrameOfReferenceUID = first.FrameOfReferenceUID
    frame.RTReferencedStudySequence = DicomSequence([study])
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([frame])

    voxel_area = row_spacing * column_spacing
    structure_rois, contour_rois, observations = [], [], []
    for number, roi in enumerate(rois, start=1):
        item = Dataset()
        item.ROINumber, item.ReferencedFrameOfReferenceUID = number, first.FrameOfReferenceUID
        item.ROIName, item.ROIGenerationAlgorithm = roi.name, algorithm
        structure_rois.append(item)
        mask = np.asarray(roi.mask, dtype=bool)
        islands = sub_voxel_islands(mask)
        dropped = int(islands.sum())
        if dropped and dropped < int(mask.sum()):
            mask = mask & ~islands
            warnings.warn(f"ROI {roi.name}: dropped {dropped} sub-voxel island(s) from the RTSTRUCT (single voxels "
                          f"whose contour encloses less than one voxel's in-plane area, {voxel_area:.3g} mm2)",
                          stacklevel=2)
        elif dropped:
            warnings.warn(f"ROI {roi.name} is only {dropped} sub-voxel island(s) (single voxels); written as they are",
                          stacklevel=2)
        slice_contours, points = [], []
        for k in np.flatnonzero(mask.any(axis=(1, 2))):
            xy = mask_contours(mask[k])
            if not xy:
                continue
            stacked = np.concatenate(xy)
            origin = np.array([float(v) for v in slices[k].ImagePositionPatient])
            points.append(origin + np.outer(stacked[:, 0] * column_spacing, row_direction)
                          + np.outer(stacked[:, 1] * row_spacing, column_direction))
            slice_contours.append((image_reference_bytes(slices[k]), [len(c) for c in xy]))
        text, end = format_decimal_strings(np.concatenate(points)) if points else (b"", np.zeros(0, np.int64))
        contours, value = [], 0
        for reference, counts in slice_contours:
            for count in counts:
                start = int(end[value - 1]) + 1 if value else 0
                value += 3 * count
                contours.append((reference, count, text[start:int(end[value - 1])]))
        roi_contour = Dataset()
        roi_contour.ROIDisplayColor = list(roi.color)
        roi_contour.ReferencedROINumber = number
        sequence = _contour_sequence(contours)
        roi_contour[0x30060040] = RawDataElement(Tag(0x30060040), "SQ", len(sequence), sequence, 0, True, True)
        contour_rois.append(roi_contour)
        observation = Dataset()
        observation.ObservationNumber, observation.ReferencedROINumber = number, number
        observation.RTROIInterpretedType, observation.ROIInterpreter = roi.interpreted_type, ""
        observations.append(observation)
    ds.StructureSetROISequence = DicomSequence(structure_rois)
    ds.ROIContourSequence = DicomSequence(contour_rois)
    ds.RTROIObservationsSequence = DicomSequence(observations)

    # mark the datasets as already in the file's encoding, so pydicom copies the raw ContourSequence bytes
    # instead of parsing them back into Python objects to re-encode them
    ds.set_original_encoding(True, True, ds._character_set)
    for roi_contour in contour_rois:
        roi_contour.set_original_encoding(True, True, roi_contour._character_set)
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    atomic_write_bytes(path, buffer.getvalue())
