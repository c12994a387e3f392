"""RTSTRUCT -> label map: known answers on hand-made contours, exact agreement on the real sarcoma and
lung exports, and clear refusals of series and structure sets that do not fit together."""

import shutil

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from diffumamba.dicom.rtstruct import Roi, even_odd_fill, rasterise, read_rtstruct, select_rois
from diffumamba.dicom.series import choose_series, read_series, scan_folder


def square(x0, y0, x1, y1):
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=float)


def test_square_on_voxel_edges_fills_exactly_the_enclosed_voxels():
    mask = even_odd_fill([square(1.5, 2.5, 5.5, 4.5)], 8, 8)
    expected = np.zeros((8, 8), bool)
    expected[3:5, 2:6] = True
    assert np.array_equal(mask, expected)


def test_inner_contour_cuts_a_hole_and_an_island_in_the_hole_comes_back():
    ring = even_odd_fill([square(-0.5, -0.5, 9.5, 9.5), square(1.5, 1.5, 7.5, 7.5)], 10, 10)
    assert ring.sum() == 100 - 36 and not ring[2:8, 2:8].any()
    island = even_odd_fill([square(-0.5, -0.5, 9.5, 9.5), square(1.5, 1.5, 7.5, 7.5), square(3.5, 3.5, 5.5, 5.5)], 10, 10)
    assert island.sum() == 64 + 4 and island[4:6, 4:6].all()


def test_vertices_through_voxel_centres_follow_the_half_open_rule():
    # a 4x4 square whose edges run through centres: left/top edges included, right/bottom excluded
    mask = even_odd_fill([square(2, 2, 6, 6)], 10, 10)
    assert mask.sum() == 16 and mask[2:6, 2:6].all()


def test_a_contour_partly_outside_the_image_is_clipped():
    mask = even_odd_fill([square(-5.5, -5.5, 2.5, 2.5)], 6, 6)
    assert mask.sum() == 9 and mask[:3, :3].all()


def test_rasterise_maps_patient_mm_through_the_image_geometry():
    image = sitk.Image(10, 8, 4, sitk.sitkInt16)
    image.SetSpacing((0.5, 0.5, 2.0))
    image.SetOrigin((10.0, 20.0, -4.0))
    z = -4.0 + 2 * 2.0                       # slice 2
    points = np.array([[10.0 + 0.5 * x, 20.0 + 0.5 * y, z] for x, y in square(1.5, 0.5, 4.5, 3.5)])
    mask = rasterise([Roi(1, "GTV", [points])], image)
    assert mask.shape == (4, 8, 10) and mask.sum() == 9 and mask[2, 1:4, 2:5].all()
    with pytest.raises(ValueError, match="does not lie on an image slice"):
        rasterise([Roi(1, "GTV", [points + [0, 0, 1.0]])], image)
    with pytest.raises(ValueError, match="outside the image"):
        rasterise([Roi(1, "GTV", [points + [0, 0, 40.0]])], image)


@pytest.mark.parametrize("case", ["STS_002", "STS_003", "STS_008", "STS_019"])
def test_sarcoma_rtstructs_reproduce_their_reference_masks(shared_data, case):
    root = shared_data / "sts_sarcoma_ibsi" / case
    found = scan_folder(root / "ct_dicom")
    structure_set = read_rtstruct(found.rtstructs[0])
    image = read_series(choose_series(found, referenced=structure_set.referenced_series))
    mask = rasterise(select_rois(structure_set, "GTV.*"), image)
    reference_image = sitk.ReadImage(str(root / "nifti" / "CT_mask.nii.gz"))
    reference = sitk.GetArrayFromImage(reference_image) > 0
    assert np.allclose(image.GetOrigin(), reference_image.GetOrigin(), atol=1e-2)
    assert np.array_equal(mask.astype(bool), reference)  # Dice 1.0, voxel for voxel


def test_lung1_rois_match_the_published_voxel_counts(shared_data):
    root = shared_data / "nsclc_radiomics_lung1_001"
    found = scan_folder(root)
    structure_set = read_rtstruct(found.rtstructs[0])
    assert structure_set.names == ["GTV-1", "Spinal-Cord", "Lung-Left", "Lung-Right"]
    image = read_series(choose_series(found, referenced=structure_set.referenced_series))
    assert image.GetSize() == (512, 512, 134) and image.GetOrigin()[2] == pytest.approx(-681.5)
    assert sitk.GetArrayViewFromImage(image).min() == -1024  # rescaled to HU
    gtv = rasterise(select_rois(structure_set, "gtv.*"), image)
    slices = np.flatnonzero(gtv.any(axis=(1, 2)))
    assert gtv.sum() == 54_639 and (slices.min(), slices.max()) == (65, 85)
    assert rasterise(select_rois(structure_set, "Lung-Left"), image).sum() == 795_750  # holes by even-odd


def test_unknown_roi_lists_the_existing_ones(shared_data):
    structure_set = read_rtstruct(shared_data / "nsclc_radiomics_lung1_001" / "rtstruct" / "1-1.dcm")
    with pytest.raises(ValueError, match="no ROI matches 'PTV.*'.*GTV-1, Spinal-Cord, Lung-Left, Lung-Right"):
        select_rois(structure_set, "PTV.*")
    with pytest.raises(ValueError, match="not an RTSTRUCT"):
        read_rtstruct(shared_data / "nsclc_radiomics_lung1_001" / "ct" / "1-001.dcm")


@pytest.fixture
def sarcoma_copy(shared_data, tmp_path):
    root = tmp_path / "STS_019"
    shutil.copytree(shared_data / "sts_sarcoma_ibsi" / "STS_019" / "ct_dicom", root)
    return root


def test_a_missing_slice_is_refused_with_its_position(sarcoma_copy):
    files = sorted((sarcoma_copy / "image").iterdir())
    files[20].unlink()
    with pytest.raises(ValueError, match="irregular slice spacing .*gap of 6.5"):
        read_series(choose_series(scan_folder(sarcoma_copy)))


def test_several_series_must_be_chosen_by_uid(sarcoma_copy, shared_data):
    shutil.copytree(shared_data / "sts_sarcoma_ibsi" / "STS_002" / "ct_dicom" / "image", sarcoma_copy / "other")
    found = scan_folder(sarcoma_copy)
    with pytest.raises(ValueError, match="2 CT series found, choose one by UID"):
        choose_series(found)
    uid = found.series[1].uid
    assert choose_series(found, uid=uid).uid == uid
    with pytest.raises(ValueError, match="no series 1.2.3"):
        choose_series(found, uid="1.2.3")


def test_wrong_modality_is_refused(sarcoma_copy):
    for path in (sarcoma_copy / "image").iterdir():
        header = pydicom.dcmread(path)
        header.Modality = "MR"
        header.save_as(path)
    found = scan_folder(sarcoma_copy)
    with pytest.raises(ValueError, match="no CT image series"):
        choose_series(found)
    with pytest.raises(ValueError, match="is MR, expected CT"):
        read_series(found.series[0])


def test_a_duplicated_slice_is_reported_as_duplicated_naming_both_files(sarcoma_copy):
    files = sorted((sarcoma_copy / "image").iterdir())
    copy = sarcoma_copy / "image" / "zz_copy_of_slice_20.dcm"
    shutil.copy(files[20], copy)
    with pytest.raises(ValueError, match="duplicated slice") as raised:
        read_series(choose_series(scan_folder(sarcoma_copy)))
    message = str(raised.value)
    assert files[20].name in message and copy.name in message and "missing" not in message


@pytest.fixture
def other_frame_rtstruct(sarcoma_copy, tmp_path):
    """The sarcoma RTSTRUCT with its GTV's own ReferencedFrameOfReferenceUID pointing at another frame (the
    structure set's first referenced frame still being the CT's)."""
    path = next((sarcoma_copy / "rtstruct").iterdir())
    ds = pydicom.dcmread(path)
    ds.StructureSetROISequence[0].ReferencedFrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.save_as(path)
    return path


def test_an_roi_in_another_frame_of_reference_is_refused(sarcoma_copy, other_frame_rtstruct):
    found = scan_folder(sarcoma_copy)
    structure_set = read_rtstruct(other_frame_rtstruct)
    series = choose_series(found, referenced=structure_set.referenced_series)
    assert structure_set.frame_of_reference == series.frame_of_reference        # the set-level frame agrees
    roi = structure_set.rois[0]
    assert roi.frame_of_reference == "1.2.826.0.1.3680043.8.498.1"
    image = read_series(series)
    with pytest.raises(ValueError, match=f"ROI {roi.name} is in frame of reference 1.2.826.0.1.3680043.8.498.1, "
                                         f"the image in {series.frame_of_reference}"):
        rasterise([roi], image, series.frame_of_reference)


def test_the_prior_gtv_reader_refuses_an_roi_in_another_frame(sarcoma_copy, other_frame_rtstruct):
    from diffumamba.inference.inputs import find_inputs
    from diffumamba.mask_io import read_mask

    ((_, load),) = find_inputs([sarcoma_copy / "image"], None)
    with pytest.raises(ValueError, match="is in frame of reference 1.2.826.0.1.3680043.8.498.1"):
        read_mask(other_frame_rtstruct, load())
