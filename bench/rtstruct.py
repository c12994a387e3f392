"""RTSTRUCT writing benchmark: the writer as of issue 14 (kept below as ``legacy_write_rtstruct``, one pydicom
Dataset per contour and one DS string object per coordinate, Explicit VR) vs ``write_rtstruct`` now, on speckle
masks like a model's noisy output, each run in a fresh process so that its peak RSS is its own.

Cases (512 x 512 slices, ``--slices`` of them, synthetic CT headers):

* ``speckle``: random voxels at 0.8 % (about 2,000 islands a slice, almost all single voxels, which the writer
  now drops as sub-voxel islands, with a warning);
* ``dominoes``: random 2-voxel islands (1.5 voxels of area each, kept), so every contour is encoded.

The table gives the median of ``--runs`` runs in seconds and peak RSS (MB), and the ratio legacy / new
measured in the same invocation. The legacy writer is slow (about 2 s and 30 MB per 1,000 contours), so it
runs on ``--legacy-slices`` slices and its time is compared with the new writer's on the same mask.

    python bench/rtstruct.py                         # new on 100 slices; legacy and new on 10 slices
    python bench/rtstruct.py --slices 20 --legacy-slices 5 --runs 1
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def synthetic_slices(count: int, rows: int = 512, columns: int = 512, spacing=(0.977, 0.977, 3.0)) -> list:
    """CT headers (no pixels) of an axial series, as ``series.sorted_slices`` returns them."""
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid

    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    slices = []
    for k in range(count):
        header = Dataset()
        header.PatientName, header.PatientID, header.StudyInstanceUID = "BENCH^SPECKLE", "BENCH", study
        header.SeriesInstanceUID, header.FrameOfReferenceUID = series, frame
        header.SOPClassUID, header.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", generate_uid()
        header.Rows, header.Columns, header.PixelSpacing = rows, columns, [spacing[1], spacing[0]]
        header.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        header.ImagePositionPatient = [-250.0, -250.0, -300.0 + spacing[2] * k]
        slices.append(header)
    return slices


def speckle(case: str, slices: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if case == "speckle":
        return rng.random((slices, 512, 512)) < 0.008
    mask = np.zeros((slices, 512, 512), bool)                # dominoes: 2x1 islands on a 4-voxel lattice
    seeds = rng.random((slices, 128, 128)) < 0.12
    mask[:, 0::4, 0::4] = seeds
    mask[:, 0::4, 1::4] = seeds
    return mask


def worker(method: str, case: str, count: int) -> dict:
    from diffumamba.dicom.rtstruct_writer import RoiMask, write_rtstruct

    slices, mask = synthetic_slices(count), speckle(case, count)
    writer = legacy_write_rtstruct if method == "legacy" else write_rtstruct
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        writer([RoiMask("GTV", mask)], slices, Path(folder) / "rs.dcm")
        seconds = time.perf_counter() - start
        size = (Path(folder) / "rs.dcm").stat().st_size
    return {"seconds": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "mb_file": size / 2 ** 20, "warnings": [str(w.message) for w in caught]}


def measure(method: str, case: str, count: int, runs: int) -> dict:
    results = []
    for _ in range(runs):
        done = subprocess.run([sys.executable, __file__, "--worker", method, case, str(count)], check=True,
                              capture_output=True, text=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {"seconds": statistics.median(r["seconds"] for r in results),
            "peak_mb": statistics.median(r["peak_mb"] for r in results), "mb_file": results[0]["mb_file"],
            "warnings": results[0]["warnings"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=100, help="slices of the new writer's own runs")
    parser.add_argument("--legacy-slices", type=int, default=10, help="slices of the legacy comparison")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cases", nargs="+", default=["speckle", "dominoes"])
    parser.add_argument("--worker", nargs=3, metavar=("METHOD", "CASE", "SLICES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        method, case, count = args.worker
        print(json.dumps(worker(method, case, int(count))))
        return
    from skimage.measure import find_contours

    print(f"{'case':<9} {'slices':>6} {'contours':>9} {'writer':<7} {'seconds':>8} {'peak MB':>8} {'file MB':>8} "
          f"{'legacy/new':>10}")
    for case in args.cases:
        for count, methods in ((args.legacy_slices, ("legacy", "new")), (args.slices, ("new",))):
            if count <= 0:
                continue
            mask = speckle(case, count)
            contours = sum(len(find_contours(np.pad(m.astype(np.float32), 1), 0.5)) for m in mask)
            measured = {m: measure(m, case, count, args.runs) for m in methods}
            for method, r in measured.items():
                ratio = f"{measured['legacy']['seconds'] / r['seconds']:.1f}x" if "legacy" in measured and \
                    method == "new" else ""
                print(f"{case:<9} {count:>6} {contours:>9} {method:<7} {r['seconds']:>8.2f} {r['peak_mb']:>8.0f} "
                      f"{r['mb_file']:>8.2f} {ratio:>10}", flush=True)
            for warning in measured["new"]["warnings"]:
                print(f"    new writer warned: {warning}")


# --- the writer as it was before issue 14, kept verbatim for comparison -----------------------------------------

def legacy_mask_contours(mask_slice: np.ndarray, tolerance: float = 0.1) -> list[np.ndarray]:
    from skimage.measure import approximate_polygon, find_contours

    padded = np.pad(mask_slice.astype(np.float32), 1)
    contours = []
    for contour in find_contours(padded, 0.5):
        if tolerance > 0:
            contour = approximate_polygon(contour, tolerance)
        contour = contour[:-1] if np.allclose(contour[0], contour[-1]) else contour
        if len(contour) >= 3:
            contours.append(contour[:, ::-1] - 1.0)
    return contours


RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
PATIENT_AND_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                     "StudyTime", "AccessionNumber", "ReferringPhysicianName", "StudyID", "StudyDescription")
mask_contours = legacy_mask_contours


def atomic_write_bytes(path, data):
    Path(path).write_bytes(data)


def legacy_write_rtstruct(rois, slices, path: Path, label: str = "DiffUMambaSeg",
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


if __name__ == "__main__":
    main()
