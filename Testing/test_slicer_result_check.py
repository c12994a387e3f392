"""After Segment the panel says what the model produced (issue 31): the volume and the separate pieces, and, when
the result is implausible as a lung GTV (litres of tissue, many pieces, nothing), says so, tags the segment and
points to Segment from a click. Real GTVs stay plausible. Through the module's real Segment run in the conformance
harness: the shipped lung model's result on the full lung2 CT is reported as the command line's own prediction
measures it, and a model that calls every voxel tumour (litres) is called implausible."""

import hashlib
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from test_slicer_module_conformance import MODULE, REPO, load_ct, pythonslicer, segment_and_wait  # noqa: F401

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


def shipped_segmentation_model():
    """The catalog's segmentation model (listed first) and its package."""
    entry = [e for e in json.loads((MODULE / "Resources" / "Models.json").read_text())["models"]
             if e["task"] == "segmentation"][0]
    return entry, MODULE / "Resources" / entry["url"]


def segment_lung2(session, ui, widget, shared_data):
    ui.modelComboBox.currentIndex = 1                              # the catalog's lung GTV model
    assert ui.modelComboBox.currentText.startswith("Lung GTV")
    session.answer(True)                                           # "research model, not for clinical use"
    ui.deviceComboBox.currentIndex = 1                             # cpu
    ui.inputVolumeSelector.setCurrentNode(load_ct(session, shared_data / "pyradiomics_lung_ct" / "lung2_image.nrrd"))
    segment_and_wait(session, widget)
    assert not session.slot_errors, session.slot_errors
    segmentation = widget.logic.getParameterNode().outputSegmentation
    return segmentation, segmentation.GetSegmentation().GetSegmentIdBySegmentName("GTV")


def test_the_panel_reports_what_the_shipped_model_produced_on_a_full_ct(tmp_path, pythonslicer, shared_data):
    """The volume and pieces the panel shows after Segment are those of ``diffumamba predict``'s own result with
    the same package on the same CT (read independently of the module), and the verdict follows the rules."""
    from slicer_conformance import SlicerSession

    _, package = shipped_segmentation_model()
    subprocess.run([sys.executable, "-m", "diffumamba", "predict", str(shared_data / "pyradiomics_lung_ct" /
                    "lung2_image.nrrd"), "--model", str(package), "--out", str(tmp_path / "cli"), "--progress", "none"],
                   check=True, capture_output=True)
    expected = summary_of(next((tmp_path / "cli").glob("lung2_image*.nii.gz")))
    with SlicerSession(module_dir=MODULE, work=tmp_path / "slicer", testing=False, slot_exceptions="record") as session:
        session.load_module("DiffUMambaSeg")
        widget = session.show_module("DiffUMambaSeg")
        segmentation, segment_id = segment_lung2(session, widget.ui, widget, shared_data)
        summary = result_check.segment_summary(segmentation, segment_id)
        assert (summary.pieces, summary.specks) == (expected.pieces, expected.specks)
        assert summary.volume_ml == pytest.approx(expected.volume_ml, rel=1e-3)
        assert summary.plausible == expected.plausible
        text = widget.ui.segmentResultLabel.text
        assert text == result_check.describe(expected) and text in widget.ui.logText.toPlainText()
        assert f"{expected.volume_ml:.1f} ml" in text
        import vtk

        tagged = segmentation.GetSegmentation().GetSegment(segment_id).GetTag(result_check.IMPLAUSIBLE_TAG,
                                                                              vtk.reference(""))
        assert tagged == (not expected.plausible)


def tumour_everywhere_package(tmp_path):
    """The shipped model with its output layers' biases set to call every voxel tumour (same plan, same network):
    what a broken or wrong model does, litres of "GTV" in the lung box, whatever the CT."""
    import torch

    from diffumamba.checkpoint import load_checkpoint_bytes
    from diffumamba.model_package import PackageFold, package_members, write_model_package

    _, package = shipped_segmentation_model()
    members = dict(package_members(package))
    name = next(iter(members))
    header, state, _ = load_checkpoint_bytes(members[name], name)
    heads = [k for k in state if k.startswith("decoder.seg_layers.") and k.endswith(".bias")]
    assert heads and all(state[k].shape == (2,) for k in heads)
    broken = {**state, **{k: torch.tensor([0.0, 1000.0]) for k in heads}}
    out = tmp_path / "broken.zip"
    write_model_package(out, [PackageFold("all", header, broken)], card="Every voxel tumour: a test object.")
    return out


def test_an_implausible_segment_result_says_so_and_points_to_segment_from_a_click(tmp_path, pythonslicer, shared_data):
    from slicer_conformance import SlicerSession

    entry, _ = shipped_segmentation_model()
    module = tmp_path / "ext" / "DiffUMambaSeg"
    shutil.copytree(MODULE, module, ignore=shutil.ignore_patterns("__pycache__", "*.zip"))
    (tmp_path / "ext" / "Training").symlink_to(REPO / "Training")
    package = tumour_everywhere_package(tmp_path)
    shutil.copyfile(package, module / "Resources" / "Models" / "broken.zip")
    (module / "Resources" / "Models.json").write_text(json.dumps({"models": [{
        **entry, "url": "Models/broken.zip", "sha256": hashlib.sha256(package.read_bytes()).hexdigest(),
        "size_bytes": package.stat().st_size}]}))
    with SlicerSession(module_dir=module, work=tmp_path / "slicer", testing=False, slot_exceptions="record") as session:
        session.load_module("DiffUMambaSeg")
        widget = session.show_module("DiffUMambaSeg")
        ui = widget.ui
        segmentation, segment_id = segment_lung2(session, ui, widget, shared_data)
        summary = result_check.segment_summary(segmentation, segment_id)
        assert not summary.plausible and summary.volume_ml > 1000                # the whole lung box
        assert any("litres is more than any lung GTV" in problem for problem in summary.problems)
        text = ui.segmentResultLabel.text
        assert text == result_check.describe(summary) and "Not plausible as a GTV" in text
        assert "Segment from a click" in text and text in ui.logText.toPlainText()
        import vtk

        tag = vtk.reference("")
        assert segmentation.GetSegmentation().GetSegment(segment_id).GetTag(result_check.IMPLAUSIBLE_TAG, tag)
        assert str(tag) and any(problem in str(tag) for problem in summary.problems)
