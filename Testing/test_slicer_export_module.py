"""The module's Export panel on a CT loaded as Slicer's DICOM module loads it (``slicer_conformance.dicom_browser``:
named "0: ", instance UIDs, patient and study items), through the conformance harness: file names Windows accepts
that carry the patient, study date and segmentation; no silent overwrite; overlapping segments ("GTV" and "GTV 2")
each exported whole to RTSTRUCT and DICOM SEG (dciodvfy-valid); the DICOM files added to the DICOM database; a
series missing from the database refused with a clear message; a "Preparing" stage; no temporary node ever listed
in a node selector; label maps not offered as CTs."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("slicer_core", reason="slicer-core (installed by scripts/install.sh) is needed")
pytest.importorskip("PySide6", reason="PySide6-Essentials (installed by scripts/install.sh) is needed")

from slicer_conformance import SlicerSession, dicom_browser, reference_dir  # noqa: E402
from test_slicer_module_conformance import pythonslicer, session  # noqa: E402,F401  (PythonSlicer on PATH; the module)

if not reference_dir().is_dir():
    pytest.skip(f"Slicer 5.12 reference folder not found at {reference_dir()}", allow_module_level=True)

REPO = Path(__file__).resolve().parents[1]
MODULE = REPO / "DiffUMambaSeg"
RUN_S = 300


@pytest.fixture
def lung1(session, shared_data, tmp_path, monkeypatch):
    import pydicom

    series = sorted((shared_data / "nsclc_radiomics_lung1_001").rglob("*.dcm"))
    files = [f for f in series if pydicom.dcmread(f, stop_before_pixels=True).Modality == "CT"]
    database = dicom_browser.install(session, dicom_browser.DICOMDatabase(files), monkeypatch)
    return dicom_browser.load_series(session, files, tmp_path / "dicom_load"), files, database


def two_overlapping_gtvs(session, ct):
    """The module's naming ("<CT> GTV") and two spheres that overlap: "GTV" and "GTV 2"."""
    import vtk

    segmentation = session.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{ct.GetName()} GTV")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(ct)
    for name, centre in (("GTV", (-80, -30, -400)), ("GTV 2", (-70, -30, -400))):
        sphere = vtk.vtkSphereSource()
        sphere.SetCenter(*centre)
        sphere.SetRadius(15)
        sphere.SetThetaResolution(32)
        sphere.SetPhiResolution(32)
        sphere.Update()
        segmentation.AddSegmentFromClosedSurfaceRepresentation(sphere.GetOutput(), name, [1, 0, 0])
    return segmentation


def combo_watch(session, ui):
    """Every node any of the module's node selectors lists whenever a node is added (lowest priority: after the
    selectors have seen it)."""
    import vtk

    combos = [w for w in vars(ui).values() if type(w).__name__ == "qMRMLNodeComboBox"]
    listed = {}

    def look(caller, event, node=None):
        for combo in combos:
            for index in range(combo.nodeCount()):
                shown = combo.nodeFromIndex(index)
                if shown is not None:
                    listed[shown.GetID()] = shown.GetName()

    look.CallDataType = vtk.VTK_OBJECT
    session.scene.AddObserver(session.scene.NodeAddedEvent, look, -1000.0)
    return listed


def export(session, ui, form, answer=None, refused=False):
    """Click Export in ``form`` (``answer``: to the replace question); ``refused``: the module says why not."""
    if answer is not None:
        session.answer(answer)
    ui.exportFormatComboBox.currentIndex = ["seg.nrrd", "nifti", "nrrd", "rtstruct", "rtstruct-slicerrt",
                                            "dicom-seg"].index(form)
    ui.exportButton.click()
    if ui.exportButton.text == "Cancel":
        assert ui.progressBar.format.startswith("Preparing"), ui.progressBar.format   # before the run's own stages
        session.run_until(lambda: ui.exportButton.text == "Export", RUN_S)
    if refused:             # tryWithErrorDisplay shows the error, then re-raises into the slot (slicer/util.py)
        assert len(session.slot_errors) == 1 and session.dialogs[-1]["kind"] == "error", session.slot_errors
        session.slot_errors.clear()
    assert not session.slot_errors, session.slot_errors


def test_dicom_exports_are_named_for_the_patient_keep_overlaps_and_land_in_the_database(session, lung1, tmp_path):
    import pydicom
    import slicer

    from diffumamba.dicom.rtstruct import rasterise, read_rtstruct
    from diffumamba.dicom.series import choose_series, read_series, scan_folder
    from dicom_validation import assert_valid_dicom
    from DiffUMambaSegLib import scene as scene_io

    ct, files, database = lung1
    assert ct.GetName() == "0: " and ct.GetAttribute("DICOM.instanceUIDs")          # as the DICOM module names it
    widget = session.show_module("DiffUMambaSeg")
    ui = widget.ui
    listed = combo_watch(session, ui)
    segmentation = two_overlapping_gtvs(session, ct)
    masks = [scene_io.segment_array(session.scene, segmentation, name, ct) > 0 for name in ("GTV", "GTV 2")]
    assert (masks[0] & masks[1]).sum() > 0.2 * masks[0].sum()                     # they overlap
    ui.exportSegmentationSelector.setCurrentNode(segmentation)
    out = tmp_path / "exports"
    session.require_windows_names(out)
    ui.exportDirectoryButton.directory = str(out)
    for form in ("seg.nrrd", "nifti", "rtstruct", "dicom-seg"):
        export(session, ui, form)
    stem = "LUNG1-001_20080918_0_GTV"                    # patient ID, study date, "0:  GTV" made valid
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{stem}.seg.nrrd", f"{stem}_GTV.nii.gz", f"{stem}_GTV_2.nii.gz", f"{stem}_rtstruct.dcm", f"{stem}_seg.dcm"])
    ct_grid = read_series(choose_series(scan_folder(files[0].parent)))
    assert_valid_dicom(out / f"{stem}_rtstruct.dcm")
    rois = read_rtstruct(out / f"{stem}_rtstruct.dcm").rois
    assert [r.name for r in rois] == ["GTV", "GTV 2"]
    for roi, mask in zip(rois, masks):
        assert np.array_equal(rasterise([roi], ct_grid) > 0, mask)                # each ROI: exactly its segment
    assert_valid_dicom(out / f"{stem}_seg.dcm")
    seg = pydicom.dcmread(out / f"{stem}_seg.dcm")
    frames = seg.pixel_array.reshape(-1, int(seg.Rows), int(seg.Columns))
    for number, mask in ((1, masks[0]), (2, masks[1])):
        volume = np.zeros_like(mask)
        for index, group in enumerate(seg.PerFrameFunctionalGroupsSequence):
            if int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber) == number:
                position = [float(v) for v in group.PlanePositionSequence[0].ImagePositionPatient]
                volume[int(round(ct_grid.TransformPhysicalPointToContinuousIndex(position)[2]))] |= \
                    frames[index].astype(bool)
        assert np.array_equal(volume, mask), number                               # each SEG segment whole
    for written in (f"{stem}_rtstruct.dcm", f"{stem}_seg.dcm"):                   # C6: in the DICOM database
        uid = str(pydicom.dcmread(out / written, stop_before_pixels=True).SOPInstanceUID)
        assert database.fileForInstance(uid) == str(out / written)
    assert "Added to the DICOM database" in ui.logText.toPlainText()

    # no silent overwrite: refused -> nothing changes and nothing runs; agreed -> replaced
    before = (out / f"{stem}_rtstruct.dcm").read_bytes()
    export(session, ui, "rtstruct", answer=False, refused=True)
    assert "already there" in session.dialogs[-1]["text"] and (out / f"{stem}_rtstruct.dcm").read_bytes() == before
    assert f"{stem}_rtstruct.dcm" in session.dialogs[-2]["text"] and session.dialogs[-2]["kind"] == "question"
    export(session, ui, "rtstruct", answer=True)
    assert (out / f"{stem}_rtstruct.dcm").read_bytes() != before                  # a new structure set (new UIDs)

    # W10: one instance of the series is not in the database
    del database._files[str(pydicom.dcmread(files[3], stop_before_pixels=True).SOPInstanceUID)]
    (out / f"{stem}_seg.dcm").unlink()
    export(session, ui, "dicom-seg", refused=True)
    assert "the CT's DICOM files are not in this Slicer's DICOM database" in session.dialogs[-1]["text"]
    assert not (out / f"{stem}_seg.dcm").exists() and ui.exportButton.text == "Export"

    # K3: every node a selector ever listed is a node the user has (no temporary node flashed)
    assert listed and all(session.scene.GetNodeByID(i) is not None for i in listed), listed
    assert slicer.util


def test_a_series_missing_from_the_database_is_a_clear_error_not_the_working_directory(session, lung1):
    import pydicom

    ct, files, database = lung1
    widget = session.show_module("DiffUMambaSeg")
    assert widget.logic.services.dicom_files(ct) == [Path(f) for f in files]
    del database._files[str(pydicom.dcmread(files[0], stop_before_pixels=True).SOPInstanceUID)]
    assert database.fileForInstance("not.in.the.database") == ""                 # ctkDICOMDatabase: "", no error
    with pytest.raises(FileNotFoundError, match="not in this Slicer's DICOM database"):
        widget.logic.services.dicom_files(ct)


def test_label_maps_are_not_offered_as_cts(session):
    widget = session.show_module("DiffUMambaSeg")
    ct = session.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "CT")
    session.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "CT label")
    for combo in (widget.ui.inputVolumeSelector, widget.ui.priorVolumeSelector, widget.ui.currentVolumeSelector):
        assert [n for n in map(combo.nodeFromIndex, range(combo.nodeCount())) if n is not None] == [ct]


def test_the_harness_fails_a_test_that_writes_a_name_windows_refuses(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    with pytest.raises(AssertionError, match="forbidden character"):
        with SlicerSession(module_dir=MODULE, work=tmp_path / "slicer", testing=True) as running:
            running.require_windows_names(folder)
            (folder / "2: CT GTV.seg.nrrd").write_text("an NTFS alternate data stream on Windows")
    (folder / "2: CT GTV.seg.nrrd").unlink()
    with SlicerSession(module_dir=MODULE, work=tmp_path / "slicer2", testing=True) as running:
        running.require_windows_names(folder)
        (folder / "LUNG1-001_20080918_2_CT_GTV.seg.nrrd").write_text("fine")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from conftest import train_tiny
    from diffumamba.demo.run import write_dataset

    root = tmp_path_factory.mktemp("export_model")
    write_dataset(root / "Dataset900_Phantom", 2, 0, seed=0)
    return train_tiny(root / "Dataset900_Phantom", root)


def test_segment_runs_show_no_temporary_node_and_keep_one_uncertainty_map_per_ct(session, shared_data, tmp_path,
                                                                                   tiny_model):
    """K3/K4 during real runs: no node a selector lists is temporary; the second run replaces the first run's
    uncertainty map (one per CT, in the CT's study)."""
    import SimpleITK as sitk
    import slicer

    image = sitk.ReadImage(str(shared_data / "pyradiomics_lung_ct" / "lung2_image.nrrd"))
    sitk.WriteImage(sitk.RegionOfInterest(image, [64, 64, 12], [200, 220, 40]), str(tmp_path / "ct.nrrd"))
    sys.path.insert(0, str(MODULE))
    from DiffUMambaSegLib import logic as module_logic
    from DiffUMambaSegLib import scene as scene_io

    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(session.scene)
    study = hierarchy.CreateStudyItem(hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "P"), "S")
    ct = scene_io.read_volume(session.scene, tmp_path / "ct.nrrd", "CT")
    hierarchy.SetItemParent(hierarchy.GetItemByDataNode(ct) or hierarchy.CreateItem(study, ct), study)
    widget = session.show_module("DiffUMambaSeg")
    ui = widget.ui
    listed = combo_watch(session, ui)
    ui.inputVolumeSelector.setCurrentNode(ct)
    ui.uncertaintyCheckBox.checked = True
    ui.modelComboBox.currentIndex = ui.modelComboBox.count - 1
    ui.modelPathLineEdit.currentPath = str(tiny_model)
    for _run in range(2):
        ui.segmentButton.click()
        assert ui.progressBar.format.startswith("Preparing"), ui.progressBar.format
        session.run_until(lambda: ui.segmentButton.text == "Segment", RUN_S)
        assert not session.slot_errors, session.slot_errors
    assert listed and all(session.scene.GetNodeByID(i) is not None for i in listed), listed   # none flashed
    maps = [session.scene.GetNthNode(i) for i in range(session.scene.GetNumberOfNodes())
            if session.scene.GetNthNode(i).GetName().endswith("uncertainty")]
    assert len(maps) == 1 and maps[0].GetAttribute(module_logic.UNCERTAINTY_OF) == ct.GetID()   # replaced, not added
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(maps[0])) == study
