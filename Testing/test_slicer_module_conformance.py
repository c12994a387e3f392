"""The DiffUMambaSeg module file itself, run against Slicer 5.12's real Python layer (parameterNodeWrapper and
its GUI connectors, slicer.util, ScriptedLoadableModule), real MRML (slicer-core) and strict Qt/CTK/qMRML
stand-ins (``slicer_conformance``): load, setup/connectGui, every button, the runs of the real command line on
a real CT, undo, cancel, export, scene close, leave/re-enter, reload, and the model catalog in the panel.

What stays unchecked here (no Slicer application): real Qt event delivery and painting, the C++ Segment
Editor's effects and views, SlicerRT's exporter, the DICOM database, PythonSlicer itself (a link to this
Python stands in for it)."""

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

pytest.importorskip("slicer_core", reason="slicer-core (installed by scripts/install.sh) is needed")
pytest.importorskip("PySide6", reason="PySide6-Essentials (installed by scripts/install.sh) is needed")

from conftest import train_tiny  # noqa: E402
from slicer_conformance import SlicerSession, reference_dir  # noqa: E402

if not reference_dir().is_dir():     # beside the checkout as ../shared, like the real data (CI has both)
    pytest.skip(f"Slicer 5.12 reference folder not found at {reference_dir()}", allow_module_level=True)

REPO = Path(__file__).resolve().parents[1]
MODULE = REPO / "DiffUMambaSeg"
RUN_S = 300


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from diffumamba.demo.run import write_dataset

    root = tmp_path_factory.mktemp("conformance_model")
    write_dataset(root / "Dataset900_Phantom", 2, 0, seed=0)
    return train_tiny(root / "Dataset900_Phantom", root)


@pytest.fixture(scope="module")
def small_ct(tmp_path_factory, shared_data):
    """A real lung CT around its tumour (pyradiomics lung2, 48 ml), cropped so a run takes seconds, and its GTV."""
    root = tmp_path_factory.mktemp("conformance_ct")
    image = sitk.ReadImage(str(shared_data / "pyradiomics_lung_ct" / "lung2_image.nrrd"))
    label = sitk.ReadImage(str(shared_data / "pyradiomics_lung_ct" / "lung2_label.nrrd"))
    z, y, x = np.argwhere(sitk.GetArrayFromImage(label) > 0).mean(0).astype(int)
    start, size = [int(x) - 40, int(y) - 40, max(int(z) - 8, 0)], [80, 80, 16]
    for name, volume in (("ct.nii.gz", image), ("gtv.nii.gz", label)):
        sitk.WriteImage(sitk.RegionOfInterest(volume, size, start), str(root / name))
    return root / "ct.nii.gz", root / "gtv.nii.gz"


@pytest.fixture
def pythonslicer(tmp_path, monkeypatch):
    """PythonSlicer on PATH (Slicer's launcher puts it there): here a launcher script running this interpreter."""
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "PythonSlicer").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (folder / "PythonSlicer").chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("DIFFUMAMBASEG_MODELS", str(tmp_path / "models"))


@pytest.fixture
def session(tmp_path, pythonslicer):
    with SlicerSession(module_dir=MODULE, work=tmp_path / "slicer", testing=False, slot_exceptions="record") as running:
        running.load_module("DiffUMambaSeg")
        yield running
    assert not running.unemulated_calls, running.unemulated_calls


def load_ct(session, path, name="CT"):
    sys.path.insert(0, str(MODULE))
    from DiffUMambaSegLib import scene as scene_io

    return scene_io.read_volume(session.scene, path, name)


def gtv_voxels(segmentation, name="GTV"):
    import slicer

    content = segmentation.GetSegmentation()
    segment = content.GetSegment(content.GetSegmentIdBySegmentName(name))
    image = segment.GetRepresentation(slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName())
    from vtk.util import numpy_support

    return int((numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()) == segment.GetLabelValue()).sum())


def erase_half(segmentation, name="GTV"):
    """A user's edit: the segment's upper half erased (what Erase in the Segment Editor does to the label map)."""
    import slicer
    from vtk.util import numpy_support

    content = segmentation.GetSegmentation()
    segment = content.GetSegment(content.GetSegmentIdBySegmentName(name))
    image = segment.GetRepresentation(slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName())
    x0, x1, y0, y1, z0, z1 = image.GetExtent()
    voxels = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(z1 - z0 + 1, y1 - y0 + 1, x1 - x0 + 1)
    mine = np.argwhere(voxels == segment.GetLabelValue())
    cut = np.median(mine[:, 0])
    for k, j, i in mine[mine[:, 0] >= cut]:
        voxels[k, j, i] = 0
    image.GetPointData().GetScalars().Modified()
    image.Modified()
    segment.Modified()


def choose_checkpoint(ui, path):
    ui.modelComboBox.currentIndex = ui.modelComboBox.count - 1          # "Checkpoint or zip (choose below)"
    ui.modelPathLineEdit.currentPath = str(path)


def segment_and_wait(session, widget):
    widget.ui.segmentButton.click()
    assert widget.ui.segmentButton.text == "Cancel" and not widget.ui.propagateButton.enabled, session.slot_errors
    session.run_until(lambda: widget.ui.segmentButton.text == "Segment", RUN_S)


# --- defect 1: setup connects every selector ---------------------------------------------------------------------
def test_setup_connects_every_parameter_to_its_widget(session, small_ct):
    widget = session.show_module("DiffUMambaSeg")
    assert not session.slot_errors
    parameters = widget.logic.getParameterNode()
    ct = load_ct(session, small_ct[0])
    widget.ui.inputVolumeSelector.setCurrentNode(ct)
    widget.ui.modelPathLineEdit.currentPath = "/models/gtv.safetensors"
    widget.ui.deviceComboBox.currentIndex = 1
    widget.ui.exportFormatComboBox.currentIndex = 3
    assert parameters.inputVolume is ct and parameters.modelPath == Path("/models/gtv.safetensors")
    assert parameters.device == "cpu" and parameters.exportFormat == "rtstruct"
    parameters.priorVolume = ct                                   # and back: parameter node -> widget
    assert widget.ui.priorVolumeSelector.currentNode() is ct


# --- defects 7, 9: a run, undo, the other button, edits never silently replaced -----------------------------------
def test_segment_then_undo_and_edits_protected(session, small_ct, tiny_model):
    widget = session.show_module("DiffUMambaSeg")
    ui, editor = widget.ui, widget.ui.segmentEditorWidget
    ct = load_ct(session, small_ct[0])
    ui.inputVolumeSelector.setCurrentNode(ct)
    ui.deviceComboBox.currentIndex = 1
    choose_checkpoint(ui, tiny_model)
    ui.segmentButton.click()
    assert ui.segmentButton.text == "Cancel" and not ui.propagateButton.enabled and not ui.exportButton.enabled
    ui.propagateButton.click()                                  # disabled: must not cancel the run
    session.run_until(lambda: ui.segmentButton.text == "Segment", RUN_S)
    assert not session.slot_errors, ui.logText.toPlainText()
    assert ui.propagateButton.enabled and ui.exportButton.enabled and ui.progressBar.value == 100
    output = widget.logic.getParameterNode().outputSegmentation
    assert output is not None and editor.segmentationNode() is output and editor.sourceVolumeNode() is ct
    first = gtv_voxels(output)

    segment_and_wait(session, widget)                          # unedited: replaced without a question
    assert session.dialogs == [] and output.GetSegmentation().GetNumberOfSegments() == 1

    erase_half(output)
    edited = gtv_voxels(output)
    assert edited < first
    session.answer(False)                                       # "replace your edited GTV?" -> no
    segment_and_wait(session, widget)
    assert len(session.dialogs) == 1 and "edited" in str(session.dialogs[0])
    assert gtv_voxels(output) == edited and gtv_voxels(output, "GTV 2") == first

    session.answer(True)                                        # -> yes: replaced, and Ctrl+Z brings it back
    segment_and_wait(session, widget)
    assert gtv_voxels(output) == first
    editor.undo()
    assert gtv_voxels(output) == edited


# --- cancel: scene unchanged, child gone --------------------------------------------------------------------------
def test_cancel_leaves_the_scene_as_it_was_and_no_process(session, small_ct, tiny_model):
    widget = session.show_module("DiffUMambaSeg")
    ui = widget.ui
    ct = load_ct(session, small_ct[0])
    ui.inputVolumeSelector.setCurrentNode(ct)
    ui.uncertaintyCheckBox.checked = True                       # 8x longer: time to cancel
    choose_checkpoint(ui, tiny_model)
    before = session.scene.GetNumberOfNodes()
    ui.segmentButton.click()
    process = widget.logic.runner.process
    ui.segmentButton.click()                                    # Cancel
    session.run_until(lambda: ui.segmentButton.text == "Segment", 60)
    assert process.poll() is not None and session.scene.GetNumberOfNodes() == before
    assert "Cancelled" in ui.logText.toPlainText() and not session.slot_errors


# --- defect 11: the uncertainty overlay ---------------------------------------------------------------------------
def test_uncertainty_map_is_in_memory_with_a_colour_map(session, small_ct, tiny_model):
    widget = session.show_module("DiffUMambaSeg")
    ui = widget.ui
    ui.inputVolumeSelector.setCurrentNode(load_ct(session, small_ct[0]))
    ui.uncertaintyCheckBox.checked = True
    choose_checkpoint(ui, tiny_model)
    segment_and_wait(session, widget)
    assert not session.slot_errors
    node = session.scene.GetFirstNodeByName("CT uncertainty")                   # one map per CT (K4)
    assert node is not None and node.GetStorageNode() is None
    assert node.GetDisplayNode().GetColorNodeID() == "vtkMRMLPETProceduralColorNodePET-Heat"
    assert session.scene.GetNodeByID(node.GetDisplayNode().GetColorNodeID()) is not None


# --- defect 14: no model ------------------------------------------------------------------------------------------
def test_an_empty_model_is_refused_before_anything_starts(session, small_ct):
    widget = session.show_module("DiffUMambaSeg")
    widget.ui.inputVolumeSelector.setCurrentNode(load_ct(session, small_ct[0]))
    choose_checkpoint(widget.ui, "")
    widget.ui.segmentButton.click()
    assert widget.logic.runner is None and widget.ui.segmentButton.text == "Segment"
    assert any("Choose a model" in str(d) for d in session.dialogs), session.dialogs


# --- propagation --------------------------------------------------------------------------------------------------
def test_propagate_a_prior_gtv_and_show_the_report(session, small_ct):
    sys.path.insert(0, str(MODULE))
    from DiffUMambaSegLib import scene as scene_io

    widget = session.show_module("DiffUMambaSeg")
    ui = widget.ui
    prior, current = load_ct(session, small_ct[0], "prior"), load_ct(session, small_ct[0], "current")
    prior_gtv = scene_io.import_gtv(session.scene, small_ct[1], prior, "prior GTV")
    ui.priorVolumeSelector.setCurrentNode(prior)
    ui.priorSegmentationSelector.setCurrentNode(prior_gtv)
    ui.currentVolumeSelector.setCurrentNode(current)
    ui.propagateButton.click()
    assert ui.propagateButton.text == "Cancel" and not ui.segmentButton.enabled
    session.run_until(lambda: ui.propagateButton.text == "Propagate", RUN_S)
    assert not session.slot_errors, session.slot_errors
    assert "Dice registered prior vs result" in ui.propagationReportLabel.text
    output = widget.logic.getParameterNode().outputSegmentation
    assert output.GetName() == "current GTV" and gtv_voxels(output) == pytest.approx(gtv_voxels(prior_gtv), rel=0.05)


# --- defects 8, 10, 13: export ------------------------------------------------------------------------------------
@pytest.fixture
def dicom_ct(session, shared_data, tmp_path, monkeypatch):
    """LUNG1-001 loaded as the DICOM module loads it (``slicer_conformance.dicom_browser``): named "0: " (series
    number 0, no description), carrying its instance UIDs, in its patient and study items; the DICOM database (a
    stand-in over the real series files) maps the UIDs to files."""
    import pydicom
    from slicer_conformance import dicom_browser

    series = sorted((shared_data / "nsclc_radiomics_lung1_001").rglob("*.dcm"))
    files = [f for f in series if pydicom.dcmread(f, stop_before_pixels=True).Modality == "CT"]
    dicom_browser.install(session, dicom_browser.DICOMDatabase(files), monkeypatch)
    return dicom_browser.load_series(session, files, tmp_path / "dicom_load")


def test_every_export_format_runs_without_blocking(session, dicom_ct, tmp_path):
    import pydicom
    import slicer

    widget = session.show_module("DiffUMambaSeg")
    ui, parameters = widget.ui, widget.logic.getParameterNode()
    documents = Path(session.slicer.app.defaultScenePath)
    assert parameters.exportFolder in (documents, Path(session.qt.QStandardPaths.writableLocation(
        session.qt.QStandardPaths.DocumentsLocation)))                            # never the working directory
    segmentation = session.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "LUNG1 GTV")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(dicom_ct)
    import vtk

    sphere = vtk.vtkSphereSource()
    sphere.SetCenter(-80, -30, -400)
    sphere.SetRadius(20)
    sphere.Update()
    segmentation.AddSegmentFromClosedSurfaceRepresentation(sphere.GetOutput(), "GTV", [1, 0, 0])
    ui.exportSegmentationSelector.setCurrentNode(segmentation)
    out = tmp_path / "exports"
    session.require_windows_names(out)
    ui.exportDirectoryButton.directory = str(out)
    written = {}
    for index, form in enumerate(["seg.nrrd", "nifti", "nrrd", "rtstruct", "dicom-seg"]):
        ui.exportFormatComboBox.currentIndex = ["seg.nrrd", "nifti", "nrrd", "rtstruct", "rtstruct-slicerrt",
                                                "dicom-seg"].index(form)
        ui.exportButton.click()
        if form in ("rtstruct", "dicom-seg"):                  # in the background, with Cancel
            assert ui.exportButton.text == "Cancel" and not ui.segmentButton.enabled
            session.run_until(lambda: ui.exportButton.text == "Export", RUN_S)
        assert not session.slot_errors, (form, session.slot_errors)
        written[form] = ui.logText.toPlainText().splitlines()[-1]
    stem = "LUNG1-001_20080918_LUNG1_GTV"                     # patient ID, study date, segmentation
    assert (out / f"{stem}.seg.nrrd").is_file() and (out / f"{stem}.nii.gz").is_file()
    from dicom_validation import assert_valid_dicom

    for written in (f"{stem}_rtstruct.dcm", f"{stem}_seg.dcm"):
        assert_valid_dicom(out / written)
    rtstruct = pydicom.dcmread(out / f"{stem}_rtstruct.dcm")
    assert rtstruct.Modality == "RTSTRUCT" and rtstruct.StructureSetROISequence[0].ROIName == "GTV"
    assert pydicom.dcmread(out / f"{stem}_seg.dcm").Modality == "SEG"
    ui.exportFormatComboBox.currentIndex = 4                   # rtstruct-slicerrt without SlicerRT
    ui.exportButton.click()
    assert any("SlicerRT is not installed" in str(d) for d in session.dialogs)
    assert slicer.util  # the reference util was used throughout
    with SlicerSession(module_dir=MODULE, work=session.work, testing=False, slot_exceptions="record") as later:   # the folder is remembered
        later.load_module("DiffUMambaSeg")
        assert later.show_module("DiffUMambaSeg").logic.getParameterNode().exportFolder == out


# --- defect 6: the embedded editor's life cycle -------------------------------------------------------------------
def test_editor_node_is_the_singleton_and_survives_close_leave_and_reload(session, small_ct):
    widget = session.show_module("DiffUMambaSeg")
    editor = widget.ui.segmentEditorWidget
    scene = session.scene
    node = editor.mrmlSegmentEditorNode()
    assert node is scene.GetSingletonNode("SegmentEditor", "vtkMRMLSegmentEditorNode")
    assert editor.maximumNumberOfUndoStates == 10
    editor.setActiveEffectByName("Paint")
    session.leave_module()
    assert editor.activeEffect() is None
    session.show_module("DiffUMambaSeg")
    session.close_scene()
    assert editor.mrmlSegmentEditorNode() is scene.GetSingletonNode("SegmentEditor", "vtkMRMLSegmentEditorNode")
    assert widget.logic.getParameterNode().inputVolume is None
    ct = load_ct(session, small_ct[0])                          # after close, the panel still works
    widget.ui.inputVolumeSelector.setCurrentNode(ct)
    assert widget.logic.getParameterNode().inputVolume is ct
    reloaded = session.reload_module("DiffUMambaSeg")
    assert reloaded is not widget and not widget.panel.timer.isActive()
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentEditorNode") == 1
    assert reloaded.ui.segmentEditorWidget.mrmlSegmentEditorNode() is scene.GetSingletonNode(
        "SegmentEditor", "vtkMRMLSegmentEditorNode")
    assert not session.slot_errors, session.slot_errors


# --- defect 16: the catalog in the panel --------------------------------------------------------------------------
def test_a_catalog_model_is_shown_verified_and_run(tmp_path, pythonslicer, small_ct, tiny_model):
    module = tmp_path / "ext" / "DiffUMambaSeg"
    shutil.copytree(MODULE, module, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "ext" / "Training").symlink_to(REPO / "Training")
    (module / "Resources" / "Models").mkdir(exist_ok=True)         # holds the shipped preview too
    shutil.copyfile(tiny_model, module / "Resources" / "Models" / "tiny.safetensors")
    digest = hashlib.sha256(tiny_model.read_bytes()).hexdigest()
    (module / "Resources" / "Models.json").write_text(json.dumps({"models": [{
        "id": "tiny", "name": "Tiny test model", "version": "0.1", "task": "segmentation", "input_channels": ["CT"],
        "url": "Models/tiny.safetensors", "sha256": digest, "license": "Apache-2.0",
        "intended_use": "Checking the module's flow; not for clinical use",
        "accuracy": {"dice": 0.12, "dataset": "two phantoms"}}]}))
    with SlicerSession(module_dir=module, work=tmp_path / "slicer", testing=False, slot_exceptions="record") as session:
        session.load_module("DiffUMambaSeg")
        widget = session.show_module("DiffUMambaSeg")
        ui = widget.ui
        assert ui.modelComboBox.currentText == "Choose a model"      # a research model is never pre-selected
        ui.modelComboBox.currentIndex = 1
        assert ui.modelComboBox.currentText == "Tiny test model 0.1"
        session.answer(True)                                          # "research model, not for clinical use"
        assert "not for clinical use" in ui.modelInfoLabel.text and "0.12" in ui.modelInfoLabel.text
        ui.inputVolumeSelector.setCurrentNode(load_ct(session, small_ct[0]))
        segment_and_wait(session, widget)
        assert not session.slot_errors, session.slot_errors
        assert (tmp_path / "models").is_dir() and widget.logic.getParameterNode().outputSegmentation is not None
        assert "Cached: yes" in ui.modelInfoLabel.text


def test_the_shipped_lung_preview_is_offered_first_and_segments_a_real_ct(tmp_path, pythonslicer, small_ct):
    """Issue 16: a new user's module lists the lung GTV research preview first (not pre-selected: the review's W13),
    says what it is, copies and verifies the shipped zip into the model cache on first use, and segments a real lung
    CT with it once acknowledged; the self-test's model is the same one."""
    with SlicerSession(module_dir=MODULE, work=tmp_path / "slicer", testing=False, slot_exceptions="record") as session:
        session.load_module("DiffUMambaSeg")
        widget = session.show_module("DiffUMambaSeg")
        ui = widget.ui
        assert ui.modelComboBox.currentIndex == 0 and ui.modelComboBox.currentText == "Choose a model"
        ui.modelComboBox.currentIndex = 1
        assert ui.modelComboBox.currentText.startswith("Lung GTV")
        session.answer(True)                                          # "research model, not for clinical use"
        assert "research model" in ui.modelInfoLabel.text and "not for clinical use" in ui.modelInfoLabel.text
        assert "CC-BY-NC" in ui.modelInfoLabel.text and "Dice" in ui.modelInfoLabel.text
        ui.inputVolumeSelector.setCurrentNode(load_ct(session, small_ct[0]))
        segment_and_wait(session, widget)
        assert not session.slot_errors, session.slot_errors
        assert widget.logic.getParameterNode().outputSegmentation is not None
        assert "Cached: yes" in ui.modelInfoLabel.text
        from DiffUMambaSegLib.self_test import default_model

        checkpoints = default_model(MODULE)
        assert [p.suffix for p in checkpoints] == [".zip"]             # the verified package itself
        assert str(checkpoints[0]).startswith(str(tmp_path / "models"))


# --- defect 3: the self-test on the extension factory -------------------------------------------------------------
def test_self_test_on_a_factory_machine_without_torch_installs_and_trains_nothing(tmp_path, pythonslicer,
                                                                                   monkeypatch):
    """In testing mode without the dependencies, the self-test says loudly that the model flows did not run, and
    neither asks to install torch nor starts a training run (the factory's test machines have no torch)."""
    with SlicerSession(module_dir=MODULE, work=tmp_path / "slicer", testing=True, slot_exceptions="record") as session:
        session.load_module("DiffUMambaSeg")
        from DiffUMambaSegLib import install, runner

        real = install.installed_version
        monkeypatch.setattr(install, "installed_version", lambda name: None if name == "torch" else real(name))
        started = []
        monkeypatch.setattr(runner.CommandRunner, "start", lambda self: started.append(self.command))
        monkeypatch.setattr(install, "install_missing", lambda *args, **kwargs: started.append("install") or True)
        shown = []
        monkeypatch.setattr(session.slicer.ScriptedLoadableModule.ScriptedLoadableModuleTest, "delayDisplay",
                            lambda self, message, *args, **kwargs: shown.append(message))
        session.slicer.selfTests["DiffUMambaSeg"]()
    assert started == [] and len(shown) == 1 and "NOT run" in shown[0]


def test_a_broken_catalog_does_not_keep_the_module_from_loading(tmp_path, pythonslicer):
    module = tmp_path / "ext" / "DiffUMambaSeg"
    shutil.copytree(MODULE, module, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "ext" / "Training").symlink_to(REPO / "Training")
    (module / "Resources" / "Models.json").write_text('{"models": [{"id": "x"}]}')
    with SlicerSession(module_dir=module, work=tmp_path / "slicer", testing=False, slot_exceptions="record") as session:
        session.load_module("DiffUMambaSeg")
        widget = session.show_module("DiffUMambaSeg")
        assert "model catalog could not be read" in widget.ui.logText.toPlainText()
        assert "missing" in widget.ui.logText.toPlainText() and widget.ui.modelComboBox.count == 1
