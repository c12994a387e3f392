"""DICOM SEG: a third-party (dcmqi) SEG imports exactly; ours round-trips and is read by highdicom."""

import highdicom as hd
import numpy as np
import pytest
import SimpleITK as sitk
from dicom_validation import assert_valid_dicom

from diffumamba.dicom.rtstruct import rasterise, read_rtstruct, select_rois
from diffumamba.dicom.seg import read_seg, write_seg
from diffumamba.dicom.series import choose_series, read_series, scan_folder, sorted_slices


@pytest.fixture(scope="module")
def liver(shared_data):
    root = shared_data / "dicom_seg_liver_3slice_dcmqi"
    series = choose_series(scan_folder(root / "ct"))
    return root, series, read_series(series)


def test_dcmqi_seg_imports_to_its_source_label_map_exactly(liver):
    root, series, image = liver
    labels, names = read_seg(root / "liver_seg.dcm", image, series.frame_of_reference)
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "liver_seg.nrrd")))
    assert names == {1: "Liver"} and labels.sum() == 107_098
    assert np.array_equal(labels, reference)


def test_seg_on_another_grid_or_frame_is_refused(liver):
    root, series, image = liver
    with pytest.raises(ValueError, match="frame of reference .* differs"):
        read_seg(root / "liver_seg.dcm", image, "1.2.3")
    shifted = sitk.Image(image)
    shifted.SetOrigin([o + 0.4 for o in image.GetOrigin()])
    with pytest.raises(ValueError, match="does not lie on a slice of the image"):
        read_seg(root / "liver_seg.dcm", shifted)
    with pytest.raises(ValueError, match="cannot read .* as a DICOM SEG"):
        read_seg(sorted(series.files)[0], image)


def test_lung1_gtv_round_trips_through_our_seg(shared_data, tmp_path):
    found = scan_folder(shared_data / "nsclc_radiomics_lung1_001")
    structure_set = read_rtstruct(found.rtstructs[0])
    series = choose_series(found, referenced=structure_set.referenced_series)
    image, slices = read_series(series), sorted_slices(series)
    labels = rasterise(select_rois(structure_set, "GTV-1"), image)
    labels[rasterise(select_rois(structure_set, "Spinal-Cord"), image) > 0] = 2
    path = tmp_path / "seg.dcm"
    write_seg(labels, {1: "GTV", 2: "Spinal cord"}, slices, path, colors={1: (255, 0, 0)})
    assert_valid_dicom(path)
    back, names = read_seg(path, image, series.frame_of_reference)
    assert names == {1: "GTV", 2: "Spinal cord"} and np.array_equal(back, labels)
    seg = hd.seg.segread(str(path))   # a third-party reader agrees
    assert seg.SeriesInstanceUID != series.uid and seg.FrameOfReferenceUID == series.frame_of_reference
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["GTV", "Spinal cord"]
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "86049000"
    assert {uid for _, _, uid in seg.get_source_image_uids()} <= {h.SOPInstanceUID for h in slices}
    with pytest.raises(ValueError, match="label map is empty"):
        write_seg(np.zeros_like(labels), {1: "GTV"}, slices, tmp_path / "empty.dcm")
    with pytest.raises(ValueError, match=r"label values \[2\] have no segment name"):
        write_seg(labels, {1: "GTV"}, slices, tmp_path / "unnamed.dcm")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg.dcm"]
