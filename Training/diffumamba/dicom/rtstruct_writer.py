"""Label masks to a DICOM RTSTRUCT that references the CT series they were drawn on.

Contours run along voxel *edges* (marching squares at iso 0.5 on each slice, padded by one voxel so ROIs
touching the field of view still close), not through voxel centres: then every centre is half a voxel from
the polygon, any centre-rule reader (ours, SlicerRT, a planning system) recovers exactly the same voxels,
and the polygon area a planning system integrates equals the voxel area. Vertices are simplified to
within 0.1 voxel, which changes no rasterised voxel and roughly halves the file. The object is marked
unapproved and AI-generated; it is written atomically.
"""

from __future__ import annotations

import datetime
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..files import atomic_write_bytes

__all__ = ["RoiMask", "mask_contours", "write_rtstruct"]

RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
PATIENT_AND_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                     "StudyTime", "AccessionNumber", "ReferringPhysicianName", "StudyID", "StudyDescription")


@dataclass
class RoiMask:
    """One structure to write: its name, (z, y, x) mask on the CT grid, display colour and RT type."""

    name: str
    mask: np.ndarray
    color: tuple[int, int, int] = (255, 0, 0)
    interpreted_type: str = "GTV"


def mask_contours(mask_slice: np.ndarray, tolerance: float = 0.1) -> list[np.ndarray]:
    """Closed voxel-edge contours of one 2D slice as (N, 2) continuous (x, y) indices, without the repeated end."""
    from skimage.measure import approximate_polygon, find_contours

    padded = np.pad(mask_slice.astype(np.float32), 1)
    contours = []
    for contour in find_contours(padded, 0.5):
        if tolerance > 0:
            contour = approximate_polygon(contour, tolerance)
        contour = contour[:-1] if np.allclose(contour[0], contour[-1]) else contour
        if len(contour) >= 3:
            contours.append(contour[:, ::-1] - 1.0)           # (row, col) of the padded slice -> (x, y)
    return contours


def write_rtstruct(rois: Sequence[RoiMask], slices: Sequence, path: Path, label: str = "DiffUMambaSeg",
                   algorithm: str = "AUTOMATIC") -> None:
    """Write ``rois`` as an RTSTRUCT referencing the CT series whose headers are ``slices`` (in slice order,
    as ``series.sorted_slices`` returns them)."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence as DicomSequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

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
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    for keyword in PATIENT_AND_STUDY:
        if keyword in first:
            setattr(ds, keyword, first.data_element(keyword).value)
    ds.SOPClassUID, ds.SOPInstanceUID = RT_STRUCTURE_SET_STORAGE, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = "RTSTRUCT", generate_uid(), 999
    ds.SeriesDescription = "DiffUMambaSeg AI contours - not clinically approved"
    ds.Manufacturer, ds.ManufacturerModelName = "DiffUMambaSeg", "diffumamba"
    ds.InstanceCreationDate = ds.StructureSetDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = ds.StructureSetTime = now.strftime("%H%M%S")
    ds.StructureSetLabel, ds.ApprovalStatus = label[:16], "UNAPPROVED"
    ds.FrameOfReferenceUID = first.FrameOfReferenceUID

    def image_reference(header):
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = header.SOPClassUID, header.SOPInstanceUID
        return item

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

    structure_rois, contour_rois, observations = [], [], []
    for number, roi in enumerate(rois, start=1):
        item = Dataset()
        item.ROINumber, item.ReferencedFrameOfReferenceUID = number, first.FrameOfReferenceUID
        item.ROIName, item.ROIGenerationAlgorithm = roi.name, algorithm
        structure_rois.append(item)
        contours = []
        for k in np.flatnonzero(roi.mask.any(axis=(1, 2))):
            origin = np.array([float(v) for v in slices[k].ImagePositionPatient])
            for xy in mask_contours(roi.mask[k]):
                points = origin + np.outer(xy[:, 0] * column_spacing, row_direction) \
                    + np.outer(xy[:, 1] * row_spacing, column_direction)
                contour = Dataset()
                contour.ContourImageSequence = DicomSequence([image_reference(slices[k])])
                contour.ContourGeometricType, contour.NumberOfContourPoints = "CLOSED_PLANAR", len(points)
                contour.ContourData = [f"{v:.3f}" for v in points.ravel()]
                contours.append(contour)
        roi_contour = Dataset()
        roi_contour.ROIDisplayColor = list(roi.color)
        roi_contour.ReferencedROINumber = number
        roi_contour.ContourSequence = DicomSequence(contours)
        contour_rois.append(roi_contour)
        observation = Dataset()
        observation.ObservationNumber, observation.ReferencedROINumber = number, number
        observation.RTROIInterpretedType, observation.ROIInterpreter = roi.interpreted_type, ""
        observations.append(observation)
    ds.StructureSetROISequence = DicomSequence(structure_rois)
    ds.ROIContourSequence = DicomSequence(contour_rois)
    ds.RTROIObservationsSequence = DicomSequence(observations)

    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    atomic_write_bytes(path, buffer.getvalue())
