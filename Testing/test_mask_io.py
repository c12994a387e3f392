"""``mask_io``: a GTV read the same from RTSTRUCT, DICOM SEG, ``.seg.nrrd`` and a label map on another grid, on the real
STS_019 CT series and its RTSTRUCT; structures chosen by exact name before the GTV pattern; clear refusals."""

import numpy as np
import pytest
import SimpleITK as sitk

from diffumamba.dicom.seg import write_seg
from diffumamba.inference.inputs import InputCase
from diffumamba.inference.seg_nrrd import write_seg_nrrd
from diffumamba.mask_io import read_mask

COLORS = {1: (255, 0, 0), 2: (0, 128, 255)}


def test_prior_gtv_formats_agree(sarcoma, tmp_path):
    folder, case, gtv = sarcoma
    from_rtstruct = read_mask(folder / "rtstruct" / "RS.dcm", case)
    assert np.array_equal(from_rtstruct, gtv)
    write_seg(gtv, {1: "GTV"}, case.slices, tmp_path / "seg.dcm")
    assert np.array_equal(read_mask(tmp_path / "seg.dcm", case), gtv)
    write_seg_nrrd(gtv, {1: "GTV", 2: "Lung"}, case.image, tmp_path / "gtv.seg.nrrd", COLORS)
    assert np.array_equal(read_mask(tmp_path / "gtv.seg.nrrd", case), gtv)
    # A label map on a cropped grid of the same space is put back on the prior grid.
    where = np.argwhere(gtv)
    low, high = where.min(0) - 2, where.max(0) + 3
    crop = sitk.RegionOfInterest(_on_grid(gtv * 3, case.image), [int(v) for v in (high - low)[::-1]],
                                 [int(v) for v in low[::-1]])
    sitk.WriteImage(crop, str(tmp_path / "crop.nrrd"))
    assert np.array_equal(read_mask(tmp_path / "crop.nrrd", case, label=3), gtv)
    with pytest.raises(ValueError, match="has no voxel of label 1; it has \\[0, 3\\]"):
        read_mask(tmp_path / "crop.nrrd", case, label=1)
    with pytest.raises(ValueError, match="prior GTV from .* is empty on its scan's grid"):
        read_mask(tmp_path / "gtv.seg.nrrd", case, roi="lung", what="prior GTV")   # a segment that holds no voxel
    with pytest.raises(ValueError, match="no structure matches 'PTV' in RS.dcm; it has: GTV_Mass_CT"):
        read_mask(folder / "rtstruct" / "RS.dcm", case, roi="PTV")
    with pytest.raises(ValueError, match="give the prior scan as its DICOM series folder"):
        read_mask(folder / "rtstruct" / "RS.dcm", InputCase("ct", case.image))


def _on_grid(values, reference):
    image = sitk.GetImageFromArray(values.astype(np.uint8))
    image.CopyInformation(reference)
    return image


def test_exact_roi_name_is_chosen_over_the_pattern(sarcoma, tmp_path):
    _, case, gtv = sarcoma
    lung = np.zeros_like(gtv)
    lung[:, :10, :10] = 1
    write_seg_nrrd(gtv + 2 * lung, {1: "GTV", 2: "Lung"}, case.image, tmp_path / "two.seg.nrrd", COLORS)
    assert np.array_equal(read_mask(tmp_path / "two.seg.nrrd", case, roi="lung"), lung)
    assert np.array_equal(read_mask(tmp_path / "two.seg.nrrd", case), gtv)   # default: names like GTV*
