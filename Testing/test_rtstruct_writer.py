"""Label map -> RTSTRUCT: voxel-edge contours that any centre-rule reader turns back into the same voxels,
referencing the CT series, readable by pydicom; exact round trip on the real LUNG1-001 structures."""

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_validation import assert_valid_dicom

from diffumamba.dicom.rtstruct import even_odd_fill, rasterise, read_rtstruct, select_rois
from diffumamba.dicom.rtstruct_writer import RoiMask, mask_contours, sub_voxel_islands, write_rtstruct
from diffumamba.dicom.series import choose_series, read_series, scan_folder, sorted_slices


def shoelace(points):
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


@pytest.mark.parametrize("name", ["ring", "island", "border", "two"])
def test_contours_fill_back_to_the_same_voxels(name):
    mask = np.zeros((20, 24), bool)
    if name in ("ring", "island"):
        mask[3:17, 4:20] = True
        mask[6:14, 8:16] = False
        if name == "island":
            mask[9:11, 11:13] = True
    elif name == "border":
        mask[0:5, 0:24] = True           # touches the field of view
    else:
        mask[2:5, 2:5] = mask[10:18, 12:22] = True
    contours = mask_contours(mask)
    assert np.array_equal(even_odd_fill(contours, 20, 24), mask)


def test_polygon_area_matches_the_voxel_area():
    yy, xx = np.mgrid[:64, :64]
    disc = (yy - 32) ** 2 + (xx - 31.5) ** 2 <= 20 ** 2
    (contour,) = mask_contours(disc)
    assert shoelace(contour) / disc.sum() == pytest.approx(1.0, abs=0.01)


@pytest.fixture(scope="module")
def lung1(shared_data):
    found = scan_folder(shared_data / "nsclc_radiomics_lung1_001")
    structure_set = read_rtstruct(found.rtstructs[0])
    series = choose_series(found, referenced=structure_set.referenced_series)
    return structure_set, series, read_series(series), sorted_slices(series)


def test_lung1_round_trip_is_exact_and_references_the_ct(lung1, tmp_path):
    structure_set, series, image, slices = lung1
    masks = {name: rasterise(select_rois(structure_set, name), image) for name in ("GTV-1", "Lung-Left")}
    path = tmp_path / "rs.dcm"
    # the clinical Lung-Left rasterises with 3 single-voxel islands: they are dropped, and said so
    with pytest.warns(UserWarning, match="ROI Lung-Left: dropped 3 sub-voxel island"):
        write_rtstruct([RoiMask("GTV-1", masks["GTV-1"]),
                        RoiMask("Lung-Left", masks["Lung-Left"], (0, 128, 255), "ORGAN")], slices, path)
    back = read_rtstruct(path)
    assert back.names == ["GTV-1", "Lung-Left"]
    assert back.frame_of_reference == structure_set.frame_of_reference and back.referenced_series == series.uid
    for name, mask in masks.items():
        expected = mask.astype(bool) & ~sub_voxel_islands(mask)
        assert np.array_equal(rasterise(select_rois(back, name), image), expected)   # Dice 1.0, holes included
    assert_valid_dicom(path)
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.481.3" and ds.ApprovalStatus == "UNAPPROVED"
    assert ds.PatientID == slices[0].PatientID and ds.StudyInstanceUID == slices[0].StudyInstanceUID
    assert ds.SeriesInstanceUID != slices[0].SeriesInstanceUID
    ct_uids = {h.SOPInstanceUID for h in slices}
    referenced = ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert {i.ReferencedSOPInstanceUID for i in referenced.ContourImageSequence} == ct_uids
    gtv = ds.ROIContourSequence[0].ContourSequence
    assert all(c.ContourImageSequence[0].ReferencedSOPInstanceUID in ct_uids for c in gtv)
    assert [o.RTROIInterpretedType for o in ds.RTROIObservationsSequence] == ["GTV", "ORGAN"]
    assert list(ds.ROIContourSequence[1].ROIDisplayColor) == [0, 128, 255]
    # contour planes are the CT slice positions
    z_positions = {round(float(h.ImagePositionPatient[2]), 3) for h in slices}
    assert {round(float(c.ContourData[2]), 3) for c in gtv} <= z_positions


def test_bad_masks_are_refused_and_nothing_is_written(lung1, tmp_path):
    _, _, image, slices = lung1
    shape = sitk.GetArrayViewFromImage(image).shape
    with pytest.raises(ValueError, match="GTV is empty"):
        write_rtstruct([RoiMask("GTV", np.zeros(shape, np.uint8))], slices, tmp_path / "rs.dcm")
    with pytest.raises(ValueError, match="is not the CT's"):
        write_rtstruct([RoiMask("GTV", np.ones((3, 4, 5), np.uint8))], slices, tmp_path / "rs.dcm")
    assert not list(tmp_path.iterdir())
