"""DICOM Segmentation objects (SEG) to and from label maps on a CT grid, through highdicom.

Reading places every frame by its own plane position (not by the source-image references, which are
optional and often point at other copies of the series), so a SEG from any writer lands on the grid of
the image it was drawn on; a frame that does not lie on that grid is refused. FRACTIONAL segments are
thresholded at half their maximum value. Where segments overlap, the higher segment number wins.
"""

from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..files import atomic_write_bytes

__all__ = ["read_seg", "write_seg", "write_seg_masks", "PRIMARY_NEOPLASM"]

# SNOMED CT "Malignant neoplasm, primary (morphologic abnormality)": the GTV of a primary lung tumour.
PRIMARY_NEOPLASM = ("86049000", "SCT", "Malignant neoplasm, primary")
ABNORMAL_STRUCTURE = ("49755003", "SCT", "Morphologically Abnormal Structure")


def read_seg(path: Path, reference, frame_of_reference: Optional[str] = None) -> tuple[np.ndarray, dict[int, str]]:
    """((z, y, x) label map on the grid of the SimpleITK ``reference`` image, {segment number: label})."""
    import highdicom as hd

    try:
        seg = hd.seg.segread(str(path))
    except Exception as err:  # noqa: BLE001 - pydicom/highdicom raise many types for a bad file
        raise ValueError(f"cannot read {Path(path).name} as a DICOM SEG: {err}") from None
    if frame_of_reference and seg.FrameOfReferenceUID != frame_of_reference:
        raise ValueError(f"the SEG's frame of reference {seg.FrameOfReferenceUID} differs from the image's "
                         f"{frame_of_reference}: it was not drawn on this image")
    size = reference.GetSize()
    if (int(seg.Rows), int(seg.Columns)) != (size[1], size[0]):
        raise ValueError(f"SEG frames are {seg.Rows} x {seg.Columns}, the image slices {size[1]} x {size[0]}")
    if not np.allclose([float(v) for v in _functional_group(seg, 0, "PixelMeasuresSequence").PixelSpacing],
                       reference.GetSpacing()[1::-1], rtol=1e-3):
        raise ValueError("the SEG's pixel spacing differs from the image's")
    frames = seg.pixel_array.reshape(-1, int(seg.Rows), int(seg.Columns))
    fractional = seg.SegmentationType == "FRACTIONAL"
    threshold = float(seg.MaximumFractionalValue) / 2 if fractional else 0
    labels = np.zeros(size[::-1], dtype=np.uint8)
    for index in range(frames.shape[0]):
        position = [float(v) for v in _functional_group(seg, index, "PlanePositionSequence").ImagePositionPatient]
        i, j, k = reference.TransformPhysicalPointToContinuousIndex(position)
        slice_index = int(round(k))
        if abs(i) > 0.01 or abs(j) > 0.01 or abs(k - slice_index) > 0.01 or not 0 <= slice_index < size[2]:
            raise ValueError(f"SEG frame {index + 1} at {position} does not lie on a slice of the image")
        number = int(_functional_group(seg, index, "SegmentIdentificationSequence").ReferencedSegmentNumber)
        mask = frames[index] > threshold
        labels[slice_index][mask] = np.maximum(labels[slice_index][mask], number)
    names = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence}
    return labels, names


def _functional_group(seg, frame: int, sequence: str):
    """A functional group of one frame: per-frame if present there, else shared by all frames."""
    per_frame = seg.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and sequence in per_frame[frame]:
        return per_frame[frame][sequence].value[0]
    shared = seg.get("SharedFunctionalGroupsSequence")
    if shared is not None and sequence in shared[0]:
        return shared[0][sequence].value[0]
    raise ValueError(f"SEG frame {frame + 1} has no {sequence}")


def write_seg(labels: np.ndarray, names: dict[int, str], slices: Sequence, path: Path,
              colors: Optional[dict[int, tuple[int, int, int]]] = None, software_version: str = "") -> None:
    """Write the label map (z, y, x, on the CT grid of ``slices``) as a BINARY SEG referencing that series.

    ``names`` maps label value -> segment label; every value is coded as a primary malignant neoplasm
    (what the GTV models segment) and marked as produced by an AI algorithm.
    """
    shape = (len(slices), int(slices[0].Rows), int(slices[0].Columns))
    if labels.shape != shape:
        raise ValueError(f"label map shape {labels.shape} is not the CT's {shape}")
    present = sorted(int(v) for v in np.unique(labels) if v != 0)
    if not present:
        raise ValueError("the label map is empty; a SEG needs at least one segment")
    unnamed = [v for v in present if v not in names]
    if unnamed:
        raise ValueError(f"label values {unnamed} have no segment name")
    write_seg_masks([(names[value], labels == value) for value in present], slices, path,
                    [colors[value] if colors and value in colors else None for value in present], software_version)


def write_seg_masks(masks: Sequence[tuple[str, np.ndarray]], slices: Sequence, path: Path,
                    colors: Optional[Sequence[Optional[tuple[int, int, int]]]] = None,
                    software_version: str = "") -> None:
    """Write named binary masks (z, y, x, on the CT grid of ``slices``) as a BINARY SEG referencing that series,
    one segment per mask in order: masks may overlap (a SEG stores each segment's frames separately), so every
    segment keeps all its voxels. Each is coded as a primary malignant neoplasm (what the GTV models segment)
    and marked as produced by an AI algorithm."""
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    shape = (len(slices), int(slices[0].Rows), int(slices[0].Columns))
    if not masks:
        raise ValueError("no mask; a SEG needs at least one segment")
    for name, mask in masks:
        if np.shape(mask) != shape:
            raise ValueError(f"{name}: mask shape {np.shape(mask)} is not the CT's {shape}")
        if not np.asarray(mask).any():
            raise ValueError(f"{name} is empty; a SEG cannot hold an empty segment")
    algorithm = hd.AlgorithmIdentificationSequence(name="DiffUMambaSeg", family=codes.cid7162.ArtificialIntelligence,
                                                   version=software_version or "unknown")
    descriptions = []
    for number, (name, _mask) in enumerate(masks, start=1):
        description = hd.seg.SegmentDescription(
            segment_number=number, segment_label=name,
            segmented_property_category=hd.sr.CodedConcept(*ABNORMAL_STRUCTURE),
            segmented_property_type=hd.sr.CodedConcept(*PRIMARY_NEOPLASM),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm)
        color = colors[number - 1] if colors else None
        if color is not None:
            description.RecommendedDisplayCIELabValue = list(hd.color.CIELabColor(*_rgb_to_lab(color)).value)
        descriptions.append(description)
    stack = np.stack([np.asarray(mask, dtype=bool) for _name, mask in masks], axis=-1).astype(np.uint8)
    sources = [_clean_source(header) for header in slices]
    with warnings.catch_warnings():
        # highdicom warns about legacy values copied from the CT (e.g. one-component patient names); they are
        # the hospital's data and are kept unchanged
        warnings.simplefilter("ignore", UserWarning)
        seg = _segmentation(hd, sources, stack, descriptions, software_version)
    from .rtstruct_writer import copy_deidentification

    copy_deidentification(sources[0], seg)     # highdicom copies Patient Identity Removed but not the method
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, seg, enforce_file_format=True)
    atomic_write_bytes(path, buffer.getvalue())


def _clean_source(header):
    """A copy of a CT header that highdicom accepts and that gives a valid SEG: an empty SpecificCharacterSet
    (legal, and common in older exports) means the default repertoire (ASCII); highdicom wants a named one, and
    Latin-1 contains it. Study ID and Accession Number (SH, at most 16 characters) longer than that, as some
    exports write them, are cut to 16: highdicom copies them and the SEG would be invalid (dciodvfy error)."""
    header = copy.deepcopy(header)
    if "SpecificCharacterSet" in header and not header.SpecificCharacterSet:
        header.SpecificCharacterSet = "ISO_IR 100"
    for keyword in ("StudyID", "AccessionNumber"):
        if keyword in header and header[keyword].value and len(str(header[keyword].value)) > 16:
            setattr(header, keyword, str(header[keyword].value)[:16])
    return header


def _segmentation(hd, sources, stack, descriptions, software_version):
    return hd.seg.Segmentation(
        source_images=sources, pixel_array=stack, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=998,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="DiffUMambaSeg",
        manufacturer_model_name="diffumamba", software_versions=software_version or "unknown",
        device_serial_number="none", series_description="DiffUMambaSeg AI segmentation - not clinically approved",
        omit_empty_frames=True)


def _rgb_to_lab(rgb: tuple[int, int, int]) -> tuple[float, float, float]:
    """sRGB (0-255) to CIELab (D65), as DICOM's RecommendedDisplayCIELabValue expects before scaling."""
    from skimage.color import rgb2lab

    lab = rgb2lab(np.array(rgb, dtype=float).reshape(1, 1, 3) / 255.0)[0, 0]
    return float(lab[0]), float(lab[1]), float(lab[2])
