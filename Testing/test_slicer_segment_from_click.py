"""The catalog's click model and "Segment from a click" (issue 29), the module file run through the conformance harness
against Slicer 5.12's Python layer and real MRML, with the REAL ``diffumamba serve --stdio`` worker and the phantoms'
correction model (trained briefly: the tests check what the module does with the worker's answers, voxel for voxel
against its output files, not accuracy).

- A catalog with a segmentation model and two versions of a click model: "Correct with clicks" selects the click
  model's highest version by default, the segmentation list never offers a click model and the click list never a
  segmentation model; the click model is installed from the extension's own Resources into the model cache (SHA-256
  and package manifest checked) on the first click, and the worker runs the cached, verified zip.
- "Segment from a click" on a CT with no GTV: one include click makes a new segmentation "<CT> GTV" whose segment
  "GTV" is exactly the worker's answer to that click with an empty mask; Ctrl+Z in the editor goes back to the empty
  GTV and takes the point back; later clicks correct the same GTV.
- Without the button, an include click when there is no GTV to correct makes it the same way (an exclude click
  alone says what to do).

Unchecked here: Qt's event loop (timers fire when the test processes events), picking and rendering in real views,
keyboard Ctrl+Z (the editor's undo slot is called), the real click lesion model (its zip is not in the repository
yet: the phantoms' model is packaged the same way, with ``diffumamba package``).
"""

import hashlib
import json
import shutil

import numpy as np

from test_slicer_correction import (click, gtv_array, output_array, phantom_ct, ras_of_tumour,
                                    use_correction_model)
from test_slicer_module_conformance import MODULE, REPO, RUN_S, pythonslicer, session  # noqa: F401
from slicer_conformance import SlicerSession

CLICK_ZIP = "Models/click-lesion-0.1.0.zip"


def click_catalog_module(tmp_path, checkpoint):
    """The module copied with a catalog of a segmentation model and a click model in two versions (the older one
    listed first); the newer is the phantoms' correction model packaged as the click lesion model will be."""
    from diffumamba.cli import main

    module = tmp_path / "ext" / "DiffUMambaSeg"
    shutil.copytree(MODULE, module, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "ext" / "Training").symlink_to(REPO / "Training")
    package = module / "Resources" / CLICK_ZIP
    assert main(["package", str(checkpoint), "--out", str(package)]) == 0
    segmentation_model = b"a segmentation model, never run here"
    (module / "Resources" / "Models" / "seg.safetensors").write_bytes(segmentation_model)
    common = {"input_channels": ["CT"], "license": "Apache-2.0"}
    models = [
        {"id": "seg-test", "name": "Seg test", "version": "1.0", "task": "segmentation",
         "url": "Models/seg.safetensors", "sha256": hashlib.sha256(segmentation_model).hexdigest(), **common},
        {"id": "click-lesion", "name": "Click lesion", "version": "0.0.9", "task": "correction",
         "url": "Models/click-lesion-0.0.9.zip", "sha256": "0" * 64, **common},
        {"id": "click-lesion", "name": "Click lesion", "version": "0.1.0", "task": "correction", "url": CLICK_ZIP,
         "sha256": hashlib.sha256(package.read_bytes()).hexdigest(), "size_bytes": package.stat().st_size,
         "intended_use": "Checking the module's flow; not for clinical use", **common}]
    (module / "Resources" / "Models.json").write_text(json.dumps({"models": models}))
    return module


def items(combo):
    return [combo.itemText(index) for index in range(combo.count)]


def segmentations(session):
    scene = session.scene
    return [scene.GetNthNodeByClass(n, "vtkMRMLSegmentationNode")
            for n in range(scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode"))]


def click_and_wait(session, widget, ras):
    """A click in a view (place mode on), then the install (first time) and the worker's answer, through the timer."""
    session.place_point(ras)
    session.run_until(lambda: widget.correction.download is None and not widget.logic.correction.busy, RUN_S)
    assert not session.slot_errors, session.slot_errors
    return widget.logic.correction.last_reply


def test_the_catalog_click_model_is_the_default_and_segment_from_a_click_makes_the_gtv(tmp_path, pythonslicer,
                                                                                        correction_model):
    checkpoint, phantoms = correction_model
    module = click_catalog_module(tmp_path, checkpoint)
    with SlicerSession(module_dir=module, work=tmp_path / "slicer", testing=False, slot_exceptions="record") as session:
        session.load_module("DiffUMambaSeg")
        widget = session.show_module("DiffUMambaSeg")
        ui = widget.ui
        # the default: the click model's highest version; each list offers only its own task's models
        assert items(ui.correctionModelComboBox) == ["Click lesion 0.1.0", "Click lesion 0.0.9",
                                                     "Checkpoint or zip (choose below)"]
        assert ui.correctionModelComboBox.currentIndex == 0 and not ui.correctionModelPathLineEdit.enabled
        segmentation_models = items(ui.modelComboBox)              # (a placeholder may come first: W13)
        assert segmentation_models[-2:] == ["Seg test 1.0", "Checkpoint or zip (choose below)"]
        assert not any(item.startswith("Click lesion") for item in segmentation_models)
        info = ui.correctionModelInfoLabel.text
        assert "Task: correction" in info and "Cached: no (shipped with the extension)" in info
        ui.correctionModelComboBox.currentIndex = 2                  # the user may still pick a file ...
        assert ui.correctionModelPathLineEdit.enabled
        ui.correctionModelComboBox.currentIndex = 0                  # ... and back to the default
        assert not ui.correctionModelPathLineEdit.enabled

        # Segment from a click on a CT with no GTV
        ct = phantom_ct(session, phantoms)
        ui.inputVolumeSelector.setCurrentNode(ct)
        ui.deviceComboBox.currentIndex = 1                           # cpu
        parameters = widget.logic.getParameterNode()
        assert parameters.outputSegmentation is None and segmentations(session) == []
        session.answer(False)                                        # "a research model ... Use it?" -> no
        ui.segmentFromClickButton.click()                            # nothing armed, no place mode
        assert "NOT FOR CLINICAL USE" in session.dialogs[-1]["text"] and session.dialogs[-1]["cursor"] is None
        assert not ui.includePlaceWidget.placeModeEnabled and widget.correction.newGtvVolume is None
        assert ui.correctionStatusLabel.text.startswith("Not started: Click lesion 0.1.0 was not acknowledged")
        session.answer(True)                                         # asked again -> yes: remembered from now on
        ui.segmentFromClickButton.click()
        asked = len(session.dialogs)
        interaction = session.scene.GetNodeByID("vtkMRMLInteractionNodeSingleton")
        assert interaction.GetCurrentInteractionMode() == interaction.Place and ui.includePlaceWidget.placeModeEnabled
        assert ui.correctionStatusLabel.text.startswith("Click once inside the tumour on CT")
        reply = click_and_wait(session, widget, ras_of_tumour(phantoms))
        assert reply["ok"] and reply["clicks"] == 1

        segmentation = parameters.outputSegmentation                 # a new node, its GTV the worker's answer
        assert segmentations(session) == [segmentation] and segmentation.GetName() == "CT GTV"
        assert segmentation.GetNodeReference(segmentation.GetReferenceImageGeometryReferenceRole()) is ct
        content = segmentation.GetSegmentation()
        assert content.GetNumberOfSegments() == 1
        segment = content.GetNthSegment(0)
        assert segment.GetName() == "GTV" and segment.GetColor() == (1.0, 0.0, 0.0)
        from DiffUMambaSegLib import scene as scene_io

        assert scene_io.segment_terminology(segment) == scene_io.GTV_TERMINOLOGY
        made = gtv_array(segmentation, ct)
        assert np.array_equal(made, output_array(reply))
        assert reply["changed_voxels"] == int(made.sum()) > 0        # the request's mask was empty
        assert ui.segmentEditorWidget.segmentationNode() is segmentation
        assert ui.segmentEditorWidget.sourceVolumeNode() is ct
        assert ui.correctionStatusLabel.text.startswith(f"Applied to CT GTV › GTV: {reply['changed_voxels']} voxels")

        # the worker ran the catalog's default model, installed from Resources into the cache and verified there
        worker = widget.logic.correction.worker
        model = worker.command[worker.command.index("--model") + 1]
        cached = tmp_path / "models" / "click-lesion-0.1.0" / "click-lesion-0.1.0.zip"
        assert model == str(cached) and cached.read_bytes() == (module / "Resources" / CLICK_ZIP).read_bytes()
        assert (cached.parent / "VERIFIED").read_text().strip() == hashlib.sha256(cached.read_bytes()).hexdigest()
        assert "Cached: yes" in ui.correctionModelInfoLabel.text

        include = parameters.includePoints
        ui.segmentEditorWidget.undo()                                # Ctrl+Z: back to the empty GTV, point gone
        assert int(gtv_array(segmentation, ct).sum()) == 0 and include.GetNumberOfControlPoints() == 0
        again = click_and_wait(session, widget, ras_of_tumour(phantoms))   # the same GTV is corrected now
        assert segmentations(session) == [segmentation] and again["clicks"] == 1
        assert np.array_equal(gtv_array(segmentation, ct), output_array(again))
        assert widget.logic.correction.worker_starts == 1 and not session.slot_errors, session.slot_errors
        assert len(session.dialogs) == asked                         # acknowledged once: never asked again


def test_with_no_gtv_an_include_click_makes_it_and_the_panel_says_so(session, correction_model):
    checkpoint, phantoms = correction_model
    widget = session.show_module("DiffUMambaSeg")
    ui = widget.ui
    use_correction_model(widget, checkpoint)                         # a file, not the catalog's model
    ui.segmentFromClickButton.click()                                # no input CT: said, nothing armed
    assert ui.correctionStatusLabel.text.startswith("Choose the input CT") and widget.correction.newGtvVolume is None
    ct = phantom_ct(session, phantoms)
    ui.inputVolumeSelector.setCurrentNode(ct)
    ui.deviceComboBox.currentIndex = 1
    ui.excludePlaceWidget.setPlaceModeEnabled(True)
    session.place_point(ras_of_tumour(phantoms, (6.0, 0.0, 0.0)))   # exclude alone cannot make a GTV
    session.process_events()
    assert ui.correctionStatusLabel.text.startswith("There is no GTV yet") and segmentations(session) == []
    reply = click(session, widget, "include", ras_of_tumour(phantoms))
    segmentation = widget.logic.getParameterNode().outputSegmentation
    assert segmentations(session) == [segmentation] and reply["clicks"] == 2     # the exclude point went too
    assert np.array_equal(gtv_array(segmentation, ct), output_array(reply))
    assert reply["changed_voxels"] == int(gtv_array(segmentation, ct).sum())
    assert not session.slot_errors, session.slot_errors
