"""After Segment the panel says what the model produced (issue 31): the volume and the separate pieces, and, when
the result is implausible as a lung GTV (litres of tissue, many pieces, nothing), says so, tags the segment and
points to Segment from a click. Real GTVs stay plausible; the shipped research preview's result on the full lung2 CT
(hundreds of ml of heart and chest wall in many pieces) does not, through the module's real Segment run in the
conformance harness."""

import sys

import numpy as np
import pytest
import SimpleITK as sitk

from test_slicer_module_conformance import MODULE, load_ct, pythonslicer, segment_and_wait  # noqa: F401

sys.path.insert(0, str(MODULE))
from DiffUMambaSegLib import result_check  # noqa: E402


def summary_of(path):
    image = sitk.ReadImage(str(path))
    return result_check.summarize(sitk.GetArrayFromImage(image) > 0, float(np.prod(image.GetSpacing())) / 1000)


@pytest.mark.parametrize("case, volume", [("lung1", 1.4), ("lung2", 48.4)])
def test_real_gtvs_are_plausible(shared_data, case, volume):
    summary = summary_of(shared_data / "pyradiomics_lung_ct" / f"{case}_label.nrrd")
    assert summary.plausible and summary.pieces == 1 and summary.volume_ml == pytest.approx(volume, abs=0.1)
    assert result_check.describe(summary) == f"{volume:.1f} ml in 1 piece."


def test_the_limits_on_volume_pieces_and_emptiness():
    ml = 0.001                                                         # 1 mm³ voxels
    big = np.ones((110, 100, 100), bool)                               # 1.1 litres in one piece
    assert summary_of_array(big, ml).problems == ("1.1 litres is more than any lung GTV",)
    many = np.zeros((20, 20, 200), bool)
    for n in range(7):                                                 # 7 pieces of 8 ml, 1 speck
        many[:, :, n * 25:n * 25 + 20] = True
    many[0, 0, 190] = True
    summary = summary_of_array(many, ml)
    assert (summary.pieces, summary.specks, summary.plausible) == (7, 1, False)
    assert "7 separate pieces" in result_check.describe(summary) and "Segment from a click" in result_check.describe(summary)
    assert summary_of_array(many[:, :, :150], ml).plausible            # 6 pieces: a tumour and nodes
    assert summary_of_array(np.zeros((4, 4, 4), bool), ml).problems == ("no tumour was found",)


def summary_of_array(mask, voxel_ml):
    return result_check.summarize(mask, voxel_ml)


def test_an_implausible_segment_result_says_so_and_points_to_segment_from_a_click(tmp_path, pythonslicer, shared_data):
    from slicer_conformance import SlicerSession

    with SlicerSession(module_dir=MODULE, work=tmp_path / "slicer", testing=False, slot_exceptions="record") as session:
        session.load_module("DiffUMambaSeg")
        widget = session.show_module("DiffUMambaSeg")
        ui = widget.ui
        ui.modelComboBox.currentIndex = 1                              # the shipped lung GTV research preview
        assert ui.modelComboBox.currentText.startswith("Lung GTV")
        session.answer(True)                                           # "research model, not for clinical use"
        ui.deviceComboBox.currentIndex = 1                             # cpu
        ui.inputVolumeSelector.setCurrentNode(load_ct(session, shared_data / "pyradiomics_lung_ct" / "lung2_image.nrrd"))
        segment_and_wait(session, widget)
        assert not session.slot_errors, session.slot_errors
        segmentation = widget.logic.getParameterNode().outputSegmentation
        content = segmentation.GetSegmentation()
        segment_id = content.GetSegmentIdBySegmentName("GTV")
        summary = result_check.segment_summary(segmentation, segment_id)
        assert not summary.plausible and summary.volume_ml > 200 and summary.pieces > result_check.MAX_PIECES
        text = ui.segmentResultLabel.text
        assert text == result_check.describe(summary) and "Not plausible as a GTV" in text
        assert "Segment from a click" in text and text in ui.logText.toPlainText()
        import vtk

        tag = vtk.reference("")
        assert content.GetSegment(segment_id).GetTag(result_check.IMPLAUSIBLE_TAG, tag) and "separate pieces" in str(tag)
