"""The module's life cycle in Slicer 5.12's real Python layer (``slicer_conformance``): however a run ends
(finished, failed, cancelled, File > Close Scene during it, the module left during it) the next Segment,
Propagate and export starts and lands; the GUI follows the parameter node only while the module is shown; the
Lib is reloaded in developer mode; research models are never pre-selected, are acknowledged once, and tag their
results; questions never appear under the wait cursor; the correction worker leaves the GPU before a run.

The review's B1 (a cancelled run kept the logic "running" for ever), C1, C2, C7, K2, K5, K8/K9 and W13. Real runs of
the command line on the small 80x80x16 CT (seconds each) and on LUNG1-001 for the DICOM exports; cancel, failure
and scene close end a run the cheap way (at once, a broken model file, a database that points at no DICOM file).
"""

import shutil
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk

pytest.importorskip("slicer_core", reason="slicer-core (installed by scripts/install.sh) is needed")
pytest.importorskip("PySide6", reason="PySide6-Essentials (installed by scripts/install.sh) is needed")

from dicom_validation import assert_valid_dicom  # noqa: E402
from slicer_conformance import SlicerSession, reference_dir  # noqa: E402
from test_slicer_module_conformance import (  # noqa: E402,F401 - fixtures and helpers shared with that file
    MODULE, REPO, RUN_S, choose_checkpoint, gtv_voxels, load_ct, pythonslicer, session, small_ct, tiny_model)

if not reference_dir().is_dir():
    pytest.skip(f"Slicer 5.12 reference folder not found at {reference_dir()}", allow_module_level=True)

FORMATS = ("seg.nrrd", "nifti", "nrrd", "rtstruct", "rtstruct-slicerrt", "dicom-seg")   # the .ui's order
BACKGROUND = ("rtstruct", "dicom-seg")        # run by the command line, with Cancel
ENDS = ("finished", "failed", "cancelled", "scene_closed", "module_left")
BUTTONS = {"segment": ("segmentButton", "Segment"), "propagate": ("propagateButton", "Propagate"),
           **{form: ("exportButton", "Export") for form in FORMATS}}


# --- inputs ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lung1(tmp_path_factory, shared_data):
    """LUNG1-001's CT series: a NIfTI to load (as the DICOM module would load the series) and its UID -> file map."""
    import pydicom

    root = tmp_path_factory.mktemp("lifecycle_lung1")
    series = sorted((shared_data / "nsclc_radiomics_lung1_001").rglob("*.dcm"))
    files = [f for f in series if pydicom.dcmread(f, stop_before_pixels=True).Modality == "CT"]
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(files[0].parent)))
    sitk.WriteImage(reader.Execute(), str(root / "lung1.nii.gz"))
    (root / "not-dicom.dcm").write_text("this is not a DICOM file")
    return root / "lung1.nii.gz", {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID: f for f in files}


class Database:
    """ctkDICOMDatabase's ``fileForInstance`` over the real series (or, ``broken``, over a file that is no DICOM)."""

    def __init__(self, files, broken=None):
        self.files, self.broken = files, broken

    def fileForInstance(self, uid):
        return str(self.broken or self.files.get(uid, ""))


class SlicerRtPlugin:
    """SlicerRT's DicomRtImportExportPlugin as the module uses it: examine, then write the study's files."""

    def examineForExport(self, item):
        import slicer

        hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
        modality = "RTSTRUCT" if hierarchy.GetItemDataNode(item).IsA("vtkMRMLSegmentationNode") else "CT"
        return [Exportable(modality)]

    def export(self, exportables):
        for number, exportable in enumerate(exportables):
            Path(exportable.directory, f"{exportable.tags['Modality']}_{number}.dcm").write_text("study file")
        return ""


class Exportable:
    def __init__(self, modality):
        self.directory, self.tags = "", {"Modality": modality}

    def tag(self, name):
        return self.tags.get(name, "")

    def setTag(self, name, value):
        self.tags[name] = value


class Inputs:
    """Puts a run's inputs into the scene (again after a scene close) and checks what it left."""

    def __init__(self, session, widget, small_ct, tiny_model, lung1, tmp_path):
        self.session, self.widget, self.ui = session, widget, widget.ui
        self.small_ct, self.tiny_model, self.lung1, self.tmp_path = small_ct, tiny_model, lung1, tmp_path
        self.folders = 0
        self.bad_model = tmp_path / "broken.safetensors"
        self.bad_model.write_bytes(b"not a checkpoint")

    def prepare(self, kind, fail=False):
        ui = self.ui
        ui.deviceComboBox.currentIndex = 1                                        # cpu
        if kind == "segment":
            ui.inputVolumeSelector.setCurrentNode(load_ct(self.session, self.small_ct[0]))
            choose_checkpoint(ui, self.bad_model if fail else self.tiny_model)
        elif kind == "propagate":
            from DiffUMambaSegLib import scene as scene_io

            prior, current = load_ct(self.session, self.small_ct[0], "prior"), load_ct(self.session, self.small_ct[0],
                                                                                         "current")
            ui.priorVolumeSelector.setCurrentNode(prior)
            ui.priorSegmentationSelector.setCurrentNode(scene_io.import_gtv(self.session.scene, self.small_ct[1], prior,
                                                                            "prior GTV"))
            ui.currentVolumeSelector.setCurrentNode(current)
            ui.propagationModelPathLineEdit.currentPath = str(self.bad_model) if fail else ""
            self.widget.logic.getParameterNode().propagationModelPath = self.bad_model if fail else Path()
        else:
            self._export(kind, fail)
        self.before = self._state(kind)

    def _export(self, form, fail):
        import vtk

        path, files = self.lung1
        ct = load_ct(self.session, path, "LUNG1-001")
        ct.SetAttribute("DICOM.instanceUIDs", " ".join(files))
        self.session.slicer.dicomDatabase = Database(files, path.parent / "not-dicom.dcm" if fail else None)
        self.session.slicer.modules.dicomPlugins = {"DicomRtImportExportPlugin": SlicerRtPlugin}
        segmentation = self.session.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "LUNG1 GTV")
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(ct)
        sphere = vtk.vtkSphereSource()
        sphere.SetCenter(-80, -30, -400)
        sphere.SetRadius(20)
        sphere.Update()
        segmentation.AddSegmentFromClosedSurfaceRepresentation(sphere.GetOutput(), "GTV", [1, 0, 0])
        self._in_study(ct, segmentation)
        self.ui.exportSegmentationSelector.setCurrentNode(segmentation)
        self.ui.exportFormatComboBox.currentIndex = FORMATS.index(form)
        self.folders += 1                              # a fresh folder: nothing to replace, nothing asked
        self.folder = self.tmp_path / f"exports-{self.folders}"
        self.ui.exportDirectoryButton.directory = str(self.folder)

    def _in_study(self, ct, segmentation):
        """Patient and study items as the DICOM module makes them (the application's subject hierarchy plugins put
        every node in the hierarchy; slicer-core has no plugin logic, so it is done here)."""
        import slicer

        hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(self.session.scene)
        patient = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "LUNG1-001")
        hierarchy.SetItemAttribute(patient, "DICOM.PatientID", "LUNG1-001")
        study = hierarchy.CreateStudyItem(patient, "CT study")
        for node in (ct, segmentation):
            item = hierarchy.GetItemByDataNode(node)
            if item:
                hierarchy.SetItemParent(item, study)
            else:
                hierarchy.CreateItem(study, node)

    def _state(self, kind):
        if kind in ("segment", "propagate"):
            return self.widget.logic.getParameterNode().outputSegmentation
        return sorted(self.folder.rglob("*")) if self.folder.is_dir() else []

    def landed(self, kind):
        """The run's result is in the scene (a new GTV with voxels) or on disk (a new file of the format)."""
        if kind in ("segment", "propagate"):
            output = self.widget.logic.getParameterNode().outputSegmentation
            expected = "CT GTV" if kind == "segment" else "current GTV"
            return output is not None and output.GetName() == expected and gtv_voxels(output) > 0
        import pydicom

        new = [p for p in self._state(kind) if p not in self.before and p.is_file()]
        if kind in BACKGROUND:
            modality = "RTSTRUCT" if kind == "rtstruct" else "SEG"
            for path in new:
                assert_valid_dicom(path)                                 # dciodvfy: zero errors
            return [pydicom.dcmread(p).Modality for p in new] == [modality]
        suffix = {"seg.nrrd": ".seg.nrrd", "nifti": ".nii.gz", "nrrd": ".nrrd", "rtstruct-slicerrt": ".dcm"}[kind]
        return bool(new) and all(p.name.endswith(suffix) for p in new)


@pytest.fixture
def inputs(session, small_ct, tiny_model, lung1, tmp_path):
    widget = session.show_module("DiffUMambaSeg")
    return Inputs(session, widget, small_ct, tiny_model, lung1, tmp_path)


def click(inputs, kind):
    name, _label = BUTTONS[kind]
    getattr(inputs.ui, name).click()


def idle(inputs, kind):
    """The panel is idle again: the busy button reads its own label (whether the logic let go of the run is
    asserted separately, so a stuck run fails at once instead of timing out)."""
    name, label = BUTTONS[kind]
    return getattr(inputs.ui, name).text == label


def end_first_run(inputs, kind, end):
    """Start a run of ``kind`` and end it the way ``end`` says; returns its temporary work folder."""
    session, widget = inputs.session, inputs.widget
    inputs.prepare(kind, fail=end == "failed")
    click(inputs, kind)
    assert widget.logic.running and getattr(inputs.ui, BUTTONS[kind][0]).text == "Cancel", session.slot_errors
    work = Path(widget.logic._work.name)
    if end == "cancelled":
        click(inputs, kind)                                           # the busy button reads Cancel
    elif end == "scene_closed":
        events = len(session.scene_events)
        session.close_scene()                                         # File > Close Scene: vtkMRMLScene::Clear(0)
        assert session.scene_events[events:] == ["StartCloseEvent", "EndCloseEvent"]
    elif end == "module_left":
        session.leave_module()
    session.run_until(lambda: idle(inputs, kind), RUN_S)
    assert not widget.logic.running, f"the {end} run is still held: the next one would be refused"
    log = inputs.ui.logText.toPlainText()
    if end in ("cancelled", "scene_closed"):
        assert "Cancelled" in log.splitlines()[-1]
    if end == "failed":
        assert any(d["kind"] == "error" and "failed" in d["text"] for d in session.dialogs), session.dialogs
    if end in ("finished", "module_left"):
        assert inputs.landed(kind), log                               # also while the module was not shown
    if end == "module_left":
        session.show_module("DiffUMambaSeg")
    return work


def second_run(inputs, kind):
    inputs.prepare(kind)
    click(inputs, kind)
    if kind in ("segment", "propagate") or kind in BACKGROUND:
        assert inputs.widget.logic.running, (inputs.ui.logText.toPlainText(), inputs.session.dialogs)
        inputs.session.run_until(lambda: idle(inputs, kind), RUN_S)
    assert inputs.landed(kind), (inputs.ui.logText.toPlainText(), inputs.session.dialogs)


# --- B1: the next run starts, however the last one ended ---------------------------------------------------------
@pytest.mark.parametrize("end", ENDS)
@pytest.mark.parametrize("kind", ["segment", "propagate", "rtstruct", "dicom-seg"])
def test_a_second_run_starts_and_lands_however_the_first_ended(inputs, kind, end):
    work = end_first_run(inputs, kind, end)
    assert not inputs.widget.logic.running and not work.exists()      # nothing left "running", no temp folder left
    second_run(inputs, kind)
    assert not inputs.widget.logic.running


@pytest.mark.parametrize("end", ENDS)
def test_every_export_format_exports_after_a_run_ended(inputs, end):
    """Each format, once more after a Segment run ended each way (the exports done at once have no "running"
    state of their own, so this is where a stuck run would show)."""
    end_first_run(inputs, "segment", end)
    for form in FORMATS:
        second_run(inputs, form)
    assert not inputs.session.dialogs or all(d["kind"] == "error" for d in inputs.session.dialogs)


# --- K9: the correction worker leaves the GPU before a run -------------------------------------------------------
class GpuWorker:
    """A click-correction worker holding a model on the GPU (what ``ClickCorrection`` calls on it)."""

    def __init__(self, events):
        self.events, self.returncode, self.ready = events, None, True

    def replies(self):
        return []

    def failure(self):
        return ""

    def stop(self):
        self.events.append("worker stopped")
        self.returncode = 0


@pytest.mark.parametrize("device, stopped", [("cuda", True), ("auto", True), ("cpu", False)])
def test_the_correction_worker_is_stopped_before_a_run_on_the_gpu(inputs, monkeypatch, device, stopped):
    from DiffUMambaSegLib import runner

    events = []
    start = runner.CommandRunner.start
    monkeypatch.setattr(runner.CommandRunner, "start", lambda self: events.append("run started") or start(self))
    for kind in ("segment", "propagate"):
        events.clear()
        correction = inputs.widget.logic.correction
        correction.worker, correction._worker_key = GpuWorker(events), ("click.safetensors", device)
        inputs.prepare(kind)
        inputs.widget.logic.getParameterNode().device = device
        click(inputs, kind)
        assert events == (["worker stopped", "run started"] if stopped else ["run started"]), (kind, events)
        assert (correction.worker is None) == stopped
        inputs.session.run_until(lambda: idle(inputs, kind), RUN_S)   # without CUDA the run fails: fine here


# --- C1: the GUI follows the parameter node only while the module is shown ---------------------------------------
def test_leaving_the_module_disconnects_the_gui_and_entering_reconnects_it(inputs):
    session, ui = inputs.session, inputs.ui
    parameters = inputs.widget.logic.getParameterNode()
    first, second = load_ct(session, inputs.small_ct[0], "first"), load_ct(session, inputs.small_ct[0], "second")
    ui.inputVolumeSelector.setCurrentNode(first)
    assert parameters.inputVolume is first
    session.leave_module()
    parameters.inputVolume = second                          # e.g. a script, or another module, changes it
    assert ui.inputVolumeSelector.currentNode() is first      # the hidden GUI does not follow
    ui.deviceComboBox.currentIndex = 2
    assert parameters.device != "cuda"                        # nor does the node follow the hidden GUI
    session.show_module("DiffUMambaSeg")
    assert ui.inputVolumeSelector.currentNode() is second and ui.deviceComboBox.currentText == parameters.device
    ui.inputVolumeSelector.setCurrentNode(first)
    assert parameters.inputVolume is first                   # connected again


# --- C2, K5: declared dependencies, help with a documentation link, the progress label after a run --------------
def test_dependencies_help_link_and_the_progress_label_after_a_run(inputs):
    module = inputs.session.slicer.modules.diffumambaseg
    assert set(module.dependencies) == {"Segmentations", "Markups", "SubjectHierarchy", "Terminologies"}
    assert '<a href="https://github.com/DiffUMambaSeg/SlicerDiffUMambaSeg/blob/main/docs/slicer.md">' in module.helpText
    inputs.prepare("segment")
    click(inputs, "segment")
    inputs.session.run_until(lambda: idle(inputs, "segment"), RUN_S)
    assert inputs.ui.progressBar.value == 100 and inputs.ui.progressBar.format == "%p%"   # no stage name left


# --- C7: Reload reloads the Lib in developer mode ----------------------------------------------------------------
@pytest.mark.parametrize("developer_mode", [True, False])
def test_reload_reimports_the_lib_in_developer_mode(tmp_path, pythonslicer, developer_mode):
    module = tmp_path / "ext" / "DiffUMambaSeg"
    shutil.copytree(MODULE, module, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "ext" / "Training").symlink_to(REPO / "Training")
    with SlicerSession(module_dir=module, work=tmp_path / "slicer", testing=False, developer_mode=developer_mode,
                       slot_exceptions="record") as session:
        session.load_module("DiffUMambaSeg")
        widget = session.show_module("DiffUMambaSeg")
        assert not hasattr(widget.panel, "edited")
        panel_file = module / "DiffUMambaSegLib" / "panel.py"
        panel_file.write_text(panel_file.read_text().replace("class Panel:\n", "class Panel:\n    edited = True\n", 1))
        reloaded = session.reload_module("DiffUMambaSeg")            # slicer.util.reloadScriptedModule, as Reload
        assert reloaded is not widget and hasattr(reloaded.panel, "edited") == developer_mode
        assert not session.slot_errors, session.slot_errors


# --- W13 and K2: research models ---------------------------------------------------------------------------------
def test_the_research_preview_is_not_preselected_is_acknowledged_once_and_tags_its_result(tmp_path, pythonslicer,
                                                                                       small_ct):
    """A research model runs only when the user chose it and acknowledged it (asked once, remembered); its GTV
    says "not for clinical use"; no question ever shows the wait cursor."""
    from test_slicer_module_conformance import erase_half

    with SlicerSession(module_dir=MODULE, work=tmp_path / "slicer", testing=False, slot_exceptions="record") as session:
        session.load_module("DiffUMambaSeg")
        widget = session.show_module("DiffUMambaSeg")
        ui = widget.ui
        assert ui.modelComboBox.currentText == "Choose a model" and widget.panel.selectedEntry() is None
        ui.inputVolumeSelector.setCurrentNode(load_ct(session, small_ct[0]))
        ui.segmentButton.click()                                     # nothing chosen: refused, nothing runs
        assert not widget.logic.running and any("Choose a model" in d["text"] for d in session.dialogs)
        refused = session.dialogs[-1]["text"].split("\n\n")[-1]
        assert [str(error) for _slot, error, _trace in session.slot_errors] == [refused]
        session.slot_errors.clear()                                  # tryWithErrorDisplay re-raises after its dialog
        ui.modelComboBox.currentIndex = 1
        assert ui.modelComboBox.currentText.startswith("Lung GTV") and "not for clinical use" in ui.modelInfoLabel.text
        session.answer(False)                                        # "research model ... Use it?" -> no
        ui.segmentButton.click()
        assert not widget.logic.running and ui.segmentButton.text == "Segment"
        assert "NOT FOR CLINICAL USE" in session.dialogs[-1]["text"] and session.dialogs[-1]["cursor"] is None
        session.answer(True)                                         # asked again, -> yes
        ui.segmentButton.click()
        assert session.dialogs[-1]["kind"] == "question" and session.dialogs[-1]["cursor"] is None
        session.run_until(lambda: ui.segmentButton.text == "Segment", RUN_S)
        output = widget.logic.getParameterNode().outputSegmentation
        assert output is not None and not session.slot_errors, session.slot_errors
        assert "not for clinical use" in research_tag(output)
        asked = len(session.dialogs)
        erase_half(output)
        session.answer(True)                                         # "replace your edited GTV?" -> yes
        ui.segmentButton.click()
        session.run_until(lambda: ui.segmentButton.text == "Segment", RUN_S)
        new = session.dialogs[asked:]
        assert [d["kind"] for d in new] == ["question"] and "edited" in new[0]["text"]   # acknowledged once
        assert new[0]["cursor"] is None, "the question was shown under the wait cursor"
        assert session.app.overrideCursor() is None
    with SlicerSession(module_dir=MODULE, work=tmp_path / "slicer", testing=False, slot_exceptions="record") as later:
        later.load_module("DiffUMambaSeg")
        panel = later.show_module("DiffUMambaSeg").panel
        assert panel.ui.modelComboBox.currentText == "Choose a model"             # never pre-selected
        entry = panel.entries[0]
        assert panel.acknowledge(entry) and later.dialogs == []                  # remembered in the settings


def test_a_checkpoint_result_carries_no_research_tag(inputs):
    inputs.prepare("segment")
    click(inputs, "segment")
    inputs.session.run_until(lambda: idle(inputs, "segment"), RUN_S)
    assert research_tag(inputs.widget.logic.getParameterNode().outputSegmentation) is None
    assert inputs.session.dialogs == []                                          # nothing was asked


def research_tag(segmentation, name="GTV"):
    """The GTV segment's "not for clinical use" tag (vtkSegment::GetTag), or None without one."""
    import vtk

    from DiffUMambaSegLib.panel import RESEARCH_TAG

    content = segmentation.GetSegmentation()
    value = vtk.reference("")
    return str(value) if content.GetSegment(content.GetSegmentIdBySegmentName(name)).GetTag(RESEARCH_TAG, value) \
        else None


def test_a_question_after_a_run_is_not_shown_under_the_wait_cursor(inputs):
    """The review's K2: "replace your edited GTV?" came up inside tryWithErrorDisplay(waitCursor=True)."""
    from test_slicer_module_conformance import erase_half

    session = inputs.session
    inputs.prepare("segment")
    click(inputs, "segment")
    session.run_until(lambda: idle(inputs, "segment"), RUN_S)
    erase_half(inputs.widget.logic.getParameterNode().outputSegmentation)
    session.answer(False)                                            # keep the edited GTV
    click(inputs, "segment")
    session.run_until(lambda: idle(inputs, "segment"), RUN_S)
    assert [d["kind"] for d in session.dialogs] == ["question"] and "edited" in session.dialogs[0]["text"]
    assert session.dialogs[0]["cursor"] is None, f"shown under the override cursor {session.dialogs[0]['cursor']}"
    assert session.app.overrideCursor() is None and not session.slot_errors
