"""What other DICOM applications see in the objects we write: dciodvfy finds no error in our RTSTRUCT and SEG,
contours of any length survive (Implicit VR), speckle is written fast and without sub-voxel islands, and the
structures are chosen by one rule everywhere (the package's and the Slicer module's copy agree)."""

import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from dicom_validation import assert_valid_dicom
from diffumamba.dicom.roi_choice import choose_names
from diffumamba.dicom.rtstruct import rasterise, read_rtstruct, select_rois
from diffumamba.dicom.rtstruct_writer import RoiMask, format_decimal_strings, mask_contours, write_rtstruct
from diffumamba.dicom.seg import write_seg
from diffumamba.dicom.series import choose_series, read_series, scan_folder, sorted_slices

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "DiffUMambaSeg"))
from DiffUMambaSegLib import flows  # noqa: E402  (runs without Slicer or torch)


def synthetic_ct(count=3, rows=512, columns=512, spacing=(0.8, 0.7, 2.5)):
    """CT headers (as ``sorted_slices`` gives them) and the matching SimpleITK image grid."""
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid

    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    slices = []
    for k in range(count):
        header = Dataset()
        header.PatientName, header.PatientID, header.StudyInstanceUID = "TEST^CONFORMANCE", "TEST", study
        header.StudyDate, header.StudyTime, header.StudyID = "20240101", "120000", "1"
        header.SeriesInstanceUID, header.FrameOfReferenceUID = series, frame
        header.SOPClassUID, header.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", generate_uid()
        header.Rows, header.Columns, header.PixelSpacing = rows, columns, [spacing[1], spacing[0]]
        header.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        header.ImagePositionPatient = [-200.0, -180.5, -30.0 + spacing[2] * k]
        slices.append(header)
    image = sitk.Image(columns, rows, count, sitk.sitkInt16)
    image.SetSpacing(spacing)
    image.SetOrigin((-200.0, -180.5, -30.0))
    return slices, image


def comb(rows=512, columns=512):
    """A square with one-voxel teeth on all four sides: one contour of about 3,800 vertices."""
    mask = np.zeros((rows, columns), bool)
    mask[20:492, 20:492] = True
    mask[10:20, 21:491:2] = mask[492:502, 21:491:2] = True
    mask[21:491:2, 10:20] = mask[21:491:2, 492:502] = True
    return mask


@pytest.fixture(scope="module")
def lung1(shared_data):
    found = scan_folder(shared_data / "nsclc_radiomics_lung1_001")
    structure_set = read_rtstruct(found.rtstructs[0])
    series = choose_series(found, referenced=structure_set.referenced_series)
    image = read_series(series)
    return structure_set, series, image, sorted_slices(series), rasterise(select_rois(structure_set, "GTV-1"), image)


def test_our_rtstruct_and_seg_pass_dciodvfy(lung1, tmp_path):
    structure_set, series, image, slices, gtv = lung1
    write_rtstruct([RoiMask("GTV-1", gtv)], slices, tmp_path / "rs.dcm")
    write_seg(gtv, {1: "GTV"}, slices, tmp_path / "seg.dcm")
    for name in ("rs.dcm", "seg.dcm"):
        warnings_left = assert_valid_dicom(tmp_path / name)
        assert not any("OperatorsName" in w or "PositionReferenceIndicator" in w for w in warnings_left)
    ds = pydicom.dcmread(tmp_path / "rs.dcm")
    assert "OperatorsName" in ds and "PositionReferenceIndicator" in ds


def test_a_contour_of_3800_vertices_round_trips_through_implicit_vr(tmp_path):
    slices, image = synthetic_ct()
    mask = np.zeros((3, 512, 512), bool)
    mask[1] = comb()
    (contour,) = mask_contours(mask[1])
    assert len(contour) > 3000                           # over 64 KB of ContourData text
    path = tmp_path / "rs.dcm"
    write_rtstruct([RoiMask("GTV", mask)], slices, path)
    ds = pydicom.dcmread(path)                            # pydicom reads it as DS, every number
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ImplicitVRLittleEndian
    (item,) = ds.ROIContourSequence[0].ContourSequence
    assert item["ContourData"].VR == "DS" and len(item.ContourData) == 3 * int(item.NumberOfContourPoints) > 9000
    back = read_rtstruct(path)                            # and so does ours
    assert len(back.rois[0].contours) == 1 and len(back.rois[0].contours[0]) == len(contour)
    assert np.array_equal(rasterise(back.rois, image, slices[0].FrameOfReferenceUID).astype(bool), mask)
    assert_valid_dicom(path)


def test_decimal_strings_are_formatted_in_numpy_as_python_would():
    values = np.array([0, -0.0004, 0.0005, 1.5, -1.5, -250.123456, 99999.9999, -1e-9, 12.3456, -7.0005])
    text, end = format_decimal_strings(values)
    strings = text.decode().split("\\")[:-1]
    assert len(strings) == len(values) and all(len(s) <= 16 for s in strings)
    assert np.allclose([float(s) for s in strings], np.round(values, 3), atol=1e-3 + 1e-12)
    assert strings[3:6] == ["1.500", "-1.500", "-250.123"] and text[end[5]:end[5] + 1] == b"\\"
    random = np.random.default_rng(1).normal(0, 300, 10_000)
    text, _ = format_decimal_strings(random)
    assert text.decode().split("\\")[:-1] == [f"{v:.3f}" if abs(v) >= 0.0005 else s
                                              for v, s in zip(random, text.decode().split("\\"))]


def test_speckle_loses_its_sub_voxel_islands_with_a_count(tmp_path):
    slices, image = synthetic_ct(count=4)
    rng = np.random.default_rng(0)
    mask = np.zeros((4, 512, 512), bool)
    mask[1:3, 100:140, 200:260] = True                     # the tumour
    mask[1:3, 100:140, 220] = False                        # a slit: two islands a slice, both kept
    speckle = np.zeros_like(mask)
    speckle[:, 300::4, ::4] = rng.random(speckle[:, 300::4, ::4].shape) < 0.5   # isolated voxels only
    mask |= speckle
    with pytest.warns(UserWarning, match=f"ROI GTV: dropped {speckle.sum()} sub-voxel island"):
        write_rtstruct([RoiMask("GTV", mask)], slices, tmp_path / "rs.dcm")
    back = read_rtstruct(tmp_path / "rs.dcm")
    assert len(back.rois[0].contours) == 4
    assert np.array_equal(rasterise(back.rois, image).astype(bool), mask & ~speckle)
    assert_valid_dicom(tmp_path / "rs.dcm")
    single = np.zeros_like(mask)
    single[2, 5, 5] = True                                 # nothing else: kept, not lost
    with pytest.warns(UserWarning, match="only 1 sub-voxel island"):
        write_rtstruct([RoiMask("GTV", single)], slices, tmp_path / "one.dcm")
    assert np.array_equal(rasterise(read_rtstruct(tmp_path / "one.dcm").rois, image).astype(bool), single)


class _Segment:
    def __init__(self, name):
        self.name = name

    def GetName(self):
        return self.name


class _Segmentation:
    """The part of a vtkMRMLSegmentationNode that ``flows.gtv_segments`` reads."""

    def __init__(self, names):
        self.segments = [_Segment(n) for n in names]

    def GetSegmentation(self):
        return self

    def GetNumberOfSegments(self):
        return len(self.segments)

    def GetNthSegment(self, n):
        return self.segments[n]


CHOICES = [  # (names, requested, chosen names or None for "refused")
    (["Tumour"], None, ["Tumour"]),
    (["GTV-1", "Spinal-Cord"], None, ["GTV-1"]),
    (["gtvp", "GTVn", "Lung"], None, ["gtvp", "GTVn"]),
    (["Spinal cord", "Lung"], None, None),
    ([], None, None),
    (["GTV-1", "Spinal-Cord"], "gtv-1", ["GTV-1"]),          # exact, ignoring case
    (["GTV", "GTV-2"], "gtv", ["GTV"]),                       # exact wins over the regex
    (["GTV-1", "GTV-2", "CTV"], "GTV-[0-9]", ["GTV-1", "GTV-2"]),
    (["GTV-1", "gtv_mass"], "gtv.*", ["GTV-1", "gtv_mass"]),
    (["Tumour"], "GTV", None),                                # a requested name is never replaced by the only one
    (["GTV-1"], "GTV", None),                                 # whole-name match, not a prefix
    (["GTV+1", "GTV-1"], "GTV+1", ["GTV+1"]),                 # exact before regex even for regex characters
]


@pytest.mark.parametrize("names, requested, expected", CHOICES)
def test_one_rule_chooses_structures_in_the_package_and_in_the_slicer_module(names, requested, expected):
    try:
        package = [names[i] for i in choose_names(names, requested)]
    except ValueError:
        package = None
    try:
        slicer = flows.gtv_segments(_Segmentation(names), requested)
    except ValueError:
        slicer = None
    assert package == slicer == expected


def test_refusals_list_what_exists():
    with pytest.raises(ValueError, match="no structure matches 'PTV'; there are: GTV-1, Lung"):
        choose_names(["GTV-1", "Lung"], "PTV")
    with pytest.raises(ValueError, match="no structure matches 'gtv.*'; there are: Lung, Heart"):
        choose_names(["Lung", "Heart"])
    with pytest.raises(ValueError, match="bad ROI pattern"):
        choose_names(["Lung", "Heart"], "GTV[")
