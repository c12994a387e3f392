"""``diffumamba export``: a label map on a real DICOM CT's grid becomes an RTSTRUCT and a DICOM SEG that reference
the series and read back to the same voxels; off-grid, empty or unnamed labels are refused with nothing written."""

import numpy as np
import pydicom
import SimpleITK as sitk
from dicom_validation import assert_valid_dicom

from diffumamba.cli import main
from diffumamba.dicom.rtstruct_writer import sub_voxel_islands
from diffumamba.dicom.rtstruct import rasterise, read_rtstruct
from diffumamba.dicom.seg import read_seg
from diffumamba.dicom.series import choose_series, read_series, scan_folder


def test_label_map_to_rtstruct_and_seg(shared_data, tmp_path):
    case = shared_data / "sts_sarcoma_ibsi" / "STS_019"
    mask_path = case / "nifti" / "CT_mask.nii.gz"
    out = tmp_path / "out"
    assert main(["export", str(mask_path), "--reference", str(case / "ct_dicom" / "image"), "--out", str(out),
                 "--name", "edited"]) == 0
    for written in ("edited_rtstruct.dcm", "edited_seg.dcm"):
        assert_valid_dicom(out / written)   # the CT's over-long Study ID is cut to 16 characters
    series = choose_series(scan_folder(case / "ct_dicom" / "image"))
    ct = read_series(series)
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(mask_path))) > 0
    structure_set = read_rtstruct(out / "edited_rtstruct.dcm")
    assert [r.name for r in structure_set.rois] == ["GTV"]
    assert np.array_equal(rasterise(structure_set.rois, ct) > 0, mask)
    labels, segments = read_seg(out / "edited_seg.dcm", ct, str(pydicom.dcmread(next(
        (case / "ct_dicom" / "image").iterdir())).FrameOfReferenceUID))
    assert segments == {1: "GTV"} and np.array_equal(labels > 0, mask)
    rtstruct = pydicom.dcmread(out / "edited_rtstruct.dcm")
    assert rtstruct.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0] \
        .SeriesInstanceUID == series.uid


def test_bad_label_maps_are_refused(shared_data, tmp_path, capsys):
    case = shared_data / "sts_sarcoma_ibsi" / "STS_019"
    mask = sitk.ReadImage(str(case / "nifti" / "CT_mask.nii.gz"))
    sitk.WriteImage(mask[:, :, 1:], str(tmp_path / "cropped.nii.gz"))
    sitk.WriteImage(mask * 0, str(tmp_path / "empty.nii.gz"))
    sitk.WriteImage(mask * 3, str(tmp_path / "three.nii.gz"))
    for name, message in (("cropped", "is not on the grid of the DICOM series"), ("empty", "is empty"),
                          ("three", "--names names only 1..1")):
        out = tmp_path / name
        assert main(["export", str(tmp_path / f"{name}.nii.gz"), "--reference", str(case / "ct_dicom" / "image"),
                     "--out", str(out)]) == 2
        assert message in capsys.readouterr().err and not out.exists()


def test_speckle_is_exported_without_its_sub_voxel_islands_and_says_so(shared_data, tmp_path, capsys):
    case = shared_data / "sts_sarcoma_ibsi" / "STS_019"
    mask = sitk.ReadImage(str(case / "nifti" / "CT_mask.nii.gz"))
    array = sitk.GetArrayFromImage(mask) > 0
    speckle = np.zeros_like(array)
    speckle[:, 2::4, 2::4] = True
    speckle &= ~array
    labels = sitk.GetImageFromArray((array | speckle).astype(np.uint8))
    labels.CopyInformation(mask)
    sitk.WriteImage(labels, str(tmp_path / "speckle.nii.gz"))
    assert main(["export", str(tmp_path / "speckle.nii.gz"), "--reference", str(case / "ct_dicom" / "image"),
                 "--out", str(tmp_path / "out"), "--format", "rtstruct"]) == 0
    assert "warning: ROI GTV: dropped" in capsys.readouterr().err
    assert_valid_dicom(tmp_path / "out" / "speckle_rtstruct.dcm")
    ct = read_series(choose_series(scan_folder(case / "ct_dicom" / "image")))
    back = rasterise(read_rtstruct(tmp_path / "out" / "speckle_rtstruct.dcm").rois, ct) > 0
    written = array | speckle
    islands = sub_voxel_islands(written)
    assert islands.sum() > 10_000 and np.array_equal(back, written & ~islands)   # islands gone, all else kept
