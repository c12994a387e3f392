"""Exports and results of the Slicer module on real MRML (slicer-core), without the application: file names
valid on every OS that name the patient, no silent overwrite, overlapping segments exported whole (the module's
label maps and the ``diffumamba export`` command with several masks), a DICOM series missing from the database,
a CT under a parent transform, a segmentation with no reference CT, no temporary node in the scene, one
uncertainty map per CT, uncompressed work inputs."""

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer", reason="slicer-core (installed by scripts/install.sh) is needed")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "DiffUMambaSeg"))
sys.path.insert(0, str(REPO / "Testing"))

from DiffUMambaSegLib import dicom_database, file_names, flows, logic, result_writer  # noqa: E402
from DiffUMambaSegLib import scene as scene_io  # noqa: E402
from DiffUMambaSegLib.runner import RunResult  # noqa: E402
from slicer_conformance import windows_paths  # noqa: E402
from slicer_conformance.dicom_browser import DICOMDatabase, node_name  # noqa: E402


# --- B2: names valid on every OS ---------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["2: Thorax 1.0 B31f GTV", "a/b\\c?d*e|f<g>h\"i", "CON", "lpt1.seg", "tail. ",
                                  "tab\there\x01", "   ", "COM¹", "x" * 400, "..", "nul.nii.gz"])
def test_every_name_is_valid_on_windows(text):
    name = file_names.valid_file_name(text)
    assert windows_paths.name_problem(name) == "" and file_names.windows_name_problem(name) == ""
    for suffix in (".seg.nrrd", ".nii.gz", "_rtstruct.dcm"):
        assert windows_paths.name_problem(name + suffix) == ""
    assert len(name) <= file_names.MAX_STEM


def test_the_two_windows_rules_agree_and_catch_the_dicom_node_name():
    dicom_name = node_name("2", "Thorax 1.0 B31f")
    assert dicom_name == "2: Thorax 1.0 B31f"                                 # the colon stays (cleanNodeName)
    for bad in (f"{dicom_name} GTV.seg.nrrd", "CON.nii.gz", "a?.nrrd", "end.", "aux", "x" * 256):
        assert windows_paths.name_problem(bad) and file_names.windows_name_problem(bad), bad
    assert file_names.valid_file_name(f"{dicom_name} GTV") == "2_Thorax_1.0_B31f_GTV"


def test_the_export_name_carries_patient_study_date_and_segmentation():
    scene = slicer.vtkMRMLScene()
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    patient = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "Doe^Jane")
    hierarchy.SetItemAttribute(patient, "DICOM.PatientID", "ID/77:8")
    hierarchy.SetItemAttribute(patient, "DICOM.PatientName", "Doe^Jane")
    study = hierarchy.CreateStudyItem(patient, "CT")
    hierarchy.SetItemAttribute(study, "DICOM.StudyDate", "20240131")
    ct = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "2: CT")
    hierarchy.CreateItem(study, ct)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "2: CT GTV")
    assert file_names.export_stem(hierarchy, segmentation, ct) == "ID_77_8_20240131_2_CT_GTV"
    hierarchy.SetItemAttribute(patient, "DICOM.PatientID", "")
    assert file_names.export_stem(hierarchy, segmentation, ct) == "Doe^Jane_20240131_2_CT_GTV"
    assert file_names.export_stem(hierarchy, segmentation, None) == "2_CT_GTV"       # not from DICOM


def test_an_existing_file_is_replaced_only_when_the_user_agrees(tmp_path):
    there = tmp_path / "a.nrrd"
    there.write_text("patient A")
    asked = []
    with pytest.raises(FileExistsError, match="already there"):
        file_names.confirm_overwrite([there, tmp_path / "new.nrrd"], lambda q: asked.append(q) or False)
    assert str(there) in asked[0] and "new.nrrd" not in asked[0]
    file_names.confirm_overwrite([there], lambda q: True)
    file_names.confirm_overwrite([tmp_path / "new.nrrd"], lambda q: pytest.fail("asked about a new file"))


_LOGICS = []      # the module logics of the scenes made here live as long as the test session


# --- scene fixtures ----------------------------------------------------------------------------------------------
@pytest.fixture
def lung(shared_data, tmp_path):
    """pyradiomics lung2 (a real CT and its 48 ml GTV), cropped around the tumour; a scene with the segmentation
    logic (registers the converters) and the CT."""
    image = sitk.ReadImage(str(shared_data / "pyradiomics_lung_ct" / "lung2_image.nrrd"))
    label = sitk.ReadImage(str(shared_data / "pyradiomics_lung_ct" / "lung2_label.nrrd"))
    z, y, x = np.argwhere(sitk.GetArrayFromImage(label) > 0).mean(0).astype(int)
    start, size = [int(x) - 30, int(y) - 30, max(int(z) - 6, 0)], [60, 60, 12]
    for name, volume in (("ct.nrrd", image), ("gtv.nrrd", label)):
        sitk.WriteImage(sitk.RegionOfInterest(volume, size, start), str(tmp_path / name))
    scene = slicer.vtkMRMLScene()
    for cls in ("vtkSlicerSubjectHierarchyModuleLogic", "vtkSlicerSegmentationsModuleLogic", "vtkSlicerColorLogic"):
        _LOGICS.append(getattr(slicer, cls)())
        _LOGICS[-1].SetMRMLScene(scene)
    ct = scene_io.read_volume(scene, tmp_path / "ct.nrrd", "2: CT")
    return scene, ct, tmp_path / "gtv.nrrd"


def overlapping(scene, ct, gtv_path, tmp_path):
    """A segmentation with "GTV" (the real GTV) and "GTV 2" (the GTV shifted 3 voxels: they overlap)."""
    gtv = sitk.GetArrayFromImage(sitk.ReadImage(str(gtv_path))) > 0
    shifted = np.roll(gtv, 3, axis=2)
    assert (gtv & shifted).sum() > 0.5 * gtv.sum()
    image = sitk.ReadImage(str(gtv_path))
    written = sitk.GetImageFromArray(shifted.astype(np.uint8))
    written.CopyInformation(image)
    sitk.WriteImage(written, str(tmp_path / "gtv2.nrrd"))
    segmentation = scene_io.import_gtv(scene, gtv_path, ct, "2: CT GTV")
    second = scene_io.import_gtv(scene, tmp_path / "gtv2.nrrd", ct, "second", segment_name="GTV 2")
    assert segmentation.GetSegmentation().CopySegmentFromSegmentation(second.GetSegmentation(),
                                                                      second.GetSegmentation().GetNthSegmentID(0))
    scene.RemoveNode(second)
    return segmentation, gtv, shifted


def module_logic(scene, **services):
    return logic.ModuleLogic(logic.Services(scene=scene, python=lambda: sys.executable,
                                            package=lambda: REPO / "Training", ensure_dependencies=lambda: True,
                                            **services))


def parameters(segmentation, form, input_volume=None):
    return SimpleNamespace(outputSegmentation=segmentation, exportFormat=form, inputVolume=input_volume)


# --- W4: label map exports keep overlapping segments whole --------------------------------------------------------
def test_overlapping_segments_are_each_exported_with_all_their_voxels(lung, tmp_path):
    scene, ct, gtv_path = lung
    segmentation, gtv, shifted = overlapping(scene, ct, gtv_path, tmp_path)
    log = []
    module = module_logic(scene)
    first = module.export(parameters(segmentation, "nifti"), tmp_path / "out", lambda p: None, log.append)
    files = sorted((tmp_path / "out").iterdir())
    assert [f.name for f in files] == ["2_CT_GTV_GTV.nii.gz", "2_CT_GTV_GTV_2.nii.gz"] and first == files[0]
    assert any("overlap" in line for line in log)
    for path, expected in zip(files, (gtv, shifted)):
        assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(path))) > 0, expected)   # exactly the segment
    assert scene_io.overlapping_segments(scene, segmentation, ct)


def test_segments_of_the_same_name_are_both_exported(lung, tmp_path):
    scene, ct, gtv_path = lung
    segmentation, gtv, shifted = overlapping(scene, ct, gtv_path, tmp_path)
    content = segmentation.GetSegmentation()
    content.GetSegment(content.GetNthSegmentID(1)).SetName("GTV")
    module_logic(scene).export(parameters(segmentation, "nrrd"), tmp_path / "out", lambda p: None, print)
    files = sorted((tmp_path / "out").iterdir())
    assert [p.name for p in files] == ["2_CT_GTV_GTV.nrrd", "2_CT_GTV_GTV_2.nrrd"]
    for path, expected in zip(files, (gtv, shifted)):
        assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(path))) > 0, expected)
    assert len(scene_io.segment_ids(segmentation, ["GTV"])) == 2
    masks = scene_io.export_segment_masks(scene, segmentation, ct, tmp_path / "masks")
    assert [name for _id, name, _path in masks] == ["GTV", "GTV"]
    for (_id, _name, path), expected in zip(masks, (gtv, shifted)):
        assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(path))) > 0, expected)


def test_the_export_command_writes_overlapping_rois_and_segments(shared_data, tmp_path):
    """``diffumamba export`` with two masks: an RTSTRUCT whose ROIs and a SEG whose segments each read back to
    exactly their own mask, valid for dciodvfy."""
    import pydicom

    from diffumamba.cli import main
    from diffumamba.dicom.rtstruct import rasterise, read_rtstruct
    from diffumamba.dicom.series import choose_series, read_series, scan_folder
    from dicom_validation import assert_valid_dicom

    case = shared_data / "sts_sarcoma_ibsi" / "STS_019"
    image = sitk.ReadImage(str(case / "nifti" / "CT_mask.nii.gz"))
    gtv = sitk.GetArrayFromImage(image) > 0
    second = np.roll(gtv, 4, axis=2)
    assert (gtv & second).any() and (gtv & ~second).any()
    for name, array in (("a.nii.gz", gtv), ("b.nii.gz", second), ("empty.nii.gz", np.zeros_like(gtv))):
        written = sitk.GetImageFromArray(array.astype(np.uint8))
        written.CopyInformation(image)
        sitk.WriteImage(written, str(tmp_path / name))
    reference = case / "ct_dicom" / "image"
    assert main(["export", str(tmp_path / "a.nii.gz"), str(tmp_path / "b.nii.gz"), str(tmp_path / "empty.nii.gz"),
                 "--reference", str(reference), "--out", str(tmp_path / "out"), "--names", "GTV", "GTV 2", "none",
                 "--name", "both"]) == 0
    ct = read_series(choose_series(scan_folder(reference)))
    for written in ("both_rtstruct.dcm", "both_seg.dcm"):
        assert_valid_dicom(tmp_path / "out" / written)
    rois = read_rtstruct(tmp_path / "out" / "both_rtstruct.dcm").rois
    assert [r.name for r in rois] == ["GTV", "GTV 2"]                        # the empty mask is left out
    for roi, expected in zip(rois, (gtv, second)):
        assert np.array_equal(rasterise([roi], ct) > 0, expected)
    seg = pydicom.dcmread(tmp_path / "out" / "both_seg.dcm")
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["GTV", "GTV 2"]
    frames = seg.pixel_array.reshape(-1, int(seg.Rows), int(seg.Columns))
    for number, expected in ((1, gtv), (2, second)):
        volume = np.zeros_like(expected)
        for index, group in enumerate(seg.PerFrameFunctionalGroupsSequence):
            if int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber) == number:
                position = [float(v) for v in group.PlanePositionSequence[0].ImagePositionPatient]
                k = int(round(ct.TransformPhysicalPointToContinuousIndex(position)[2]))
                volume[k] |= frames[index].astype(bool)
        assert np.array_equal(volume, expected), number                       # overlap kept in both segments
    assert main(["export", str(tmp_path / "a.nii.gz"), str(tmp_path / "b.nii.gz"), "--reference", str(reference),
                 "--out", str(tmp_path / "o2"), "--names", "GTV"]) == 2          # one name per mask


# --- W10: a series the DICOM database does not hold ----------------------------------------------------------------
def test_instances_missing_from_the_database_stop_the_export_with_a_clear_message(tmp_path, shared_data):
    files = sorted((shared_data / "sts_sarcoma_ibsi" / "STS_019" / "ct_dicom" / "image").iterdir())
    import pydicom

    uids = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]
    volume = slicer.vtkMRMLScalarVolumeNode()
    volume.SetAttribute("DICOM.instanceUIDs", " ".join(uids + ["1.2.3.4.5.6.7"]))
    database = DICOMDatabase(files)
    assert database.fileForInstance("1.2.3.4.5.6.7") == ""                    # as ctkDICOMDatabase: "" not an error
    with pytest.raises(FileNotFoundError, match="not in this Slicer's DICOM database.*1 of"):
        dicom_database.series_files(volume, database)
    with pytest.raises(FileNotFoundError, match="no DICOM database is open"):
        dicom_database.series_files(volume, None)
    volume.SetAttribute("DICOM.instanceUIDs", " ".join(uids))
    assert dicom_database.series_files(volume, database) == [Path(f) for f in files]
    assert dicom_database.series_files(slicer.vtkMRMLScalarVolumeNode(), database) == []   # not from DICOM
    with pytest.raises(FileNotFoundError, match="missing"):
        flows.prepare_dicom_export(None, None, None, [Path("")], tmp_path / "w", tmp_path / "o")


# --- W12: a CT under a parent transform ----------------------------------------------------------------------------
def world_centroid(segmentation, segment_id):
    """The segment's centroid in world coordinates (its label map's geometry, then the segmentation's transform)."""
    import vtk
    from vtk.util import numpy_support

    segment = segmentation.GetSegmentation().GetSegment(segment_id)
    image = segment.GetRepresentation(slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName())
    x0, x1, y0, y1, z0, z1 = image.GetExtent()
    voxels = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(z1 - z0 + 1, y1 - y0 + 1, x1 - x0 + 1)
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    return _to_world(matrix, segmentation, np.argwhere(voxels == segment.GetLabelValue()) + [z0, y0, x0])


def ct_world_centroid(ct, mask):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    ct.GetIJKToRASMatrix(matrix)
    return _to_world(matrix, ct, np.argwhere(mask))


def _to_world(ijk_to_local, node, kji):
    """The centroid of (k, j, i) voxel indices through a node's IJK-to-local matrix and its parent transforms."""
    import vtk

    k, j, i = kji.mean(0)
    local = ijk_to_local.MultiplyPoint((i, j, k, 1.0))[:3]
    to_world = vtk.vtkGeneralTransform()
    slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(node.GetParentTransformNode(), None, to_world)
    return np.array(to_world.TransformPoint(local))


def test_a_result_on_a_transformed_ct_lands_on_the_ct(lung, tmp_path):
    import vtk

    scene, ct, gtv_path = lung
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 3, 25.0)
    matrix.SetElement(1, 3, -40.0)
    matrix.SetElement(2, 3, 12.5)
    transform.SetMatrixTransformToParent(matrix)
    ct.SetAndObserveTransformNodeID(transform.GetID())
    gtv = sitk.GetArrayFromImage(sitk.ReadImage(str(gtv_path))) > 0
    expected = ct_world_centroid(ct, gtv)
    segmentation, segment_id = result_writer.write_result(scene, gtv_path, ct, None, "GTV", lambda n: None,
                                                          lambda q: False)
    assert np.allclose(world_centroid(segmentation, segment_id), expected, atol=1e-3)
    assert segmentation.GetTransformNodeID() == transform.GetID()
    assert np.array_equal(scene_io.segment_array(scene, segmentation, "GTV", ct) > 0, gtv)   # exported: CT's grid
    again, _ = result_writer.write_result(scene, gtv_path, ct, segmentation, "GTV", lambda n: None, lambda q: True)
    assert again is segmentation
    other = scene_io.import_gtv(scene, gtv_path, ct, "imported")
    assert np.allclose(world_centroid(other, other.GetSegmentation().GetNthSegmentID(0)), expected, atol=1e-3)


# --- K3: no temporary node in the scene ----------------------------------------------------------------------------
def test_a_result_adds_only_its_segmentation_and_exports_add_nothing_visible(lung, tmp_path):
    scene, ct, gtv_path = lung
    seen = []

    def record(caller, event, node=None):
        seen.append((node.GetClassName(), node.GetHideFromEditors()))

    import vtk

    record.CallDataType = vtk.VTK_OBJECT
    scene.AddObserver(scene.NodeAddedEvent, record)
    segmentation, _ = result_writer.write_result(scene, gtv_path, ct, None, "GTV", lambda n: None, lambda q: False)
    assert [c for c, _hidden in seen] == ["vtkMRMLSegmentationNode", "vtkMRMLSegmentationDisplayNode"]
    seen.clear()
    before = scene.GetNumberOfNodes()
    module_logic(scene).export(parameters(segmentation, "nrrd"), tmp_path / "out", lambda p: None, print)
    assert seen and all(hidden for _c, hidden in seen), seen                 # every temporary node hidden at once
    assert scene.GetNumberOfNodes() == before


# --- K4: one uncertainty map per CT, in its study ------------------------------------------------------------------
def test_the_uncertainty_map_is_replaced_per_run_and_sits_in_the_ct_study(lung, tmp_path):
    scene, ct, gtv_path = lung
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    study = hierarchy.CreateStudyItem(hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "P"), "S")
    hierarchy.CreateItem(study, ct)                       # as the DICOM module places a loaded series
    image = sitk.ReadImage(str(gtv_path))
    module = module_logic(scene)
    maps = []
    for value in (0.25, 0.75):
        written = sitk.GetImageFromArray(np.full(sitk.GetArrayFromImage(image).shape, value, np.float32))
        written.CopyInformation(image)
        path = tmp_path / f"u{value}.nrrd"
        sitk.WriteImage(written, str(path))
        module.job = flows.Job([], gtv_path, uncertainty=path)            # a segmentation run that succeeded
        module.kind, module.referenceVolume = "segmentation", ct
        maps.append(module.finish(RunResult(0, False)).uncertainty)
    assert maps[0] is maps[1] and maps[0].GetScene() is scene
    from vtk.util import numpy_support

    values = numpy_support.vtk_to_numpy(maps[1].GetImageData().GetPointData().GetScalars())
    assert np.allclose(values, 0.75)
    found = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())
             if scene.GetNthNode(i).GetAttribute(logic.UNCERTAINTY_OF) == ct.GetID()]
    assert found == [maps[0]] and hierarchy.GetItemParent(hierarchy.GetItemByDataNode(maps[0])) == study
    assert maps[0].GetStorageNode() is None


# --- K7: a segmentation without a reference CT ---------------------------------------------------------------------
def test_a_segmentation_without_reference_is_exported_on_the_editor_source_volume(lung, tmp_path):
    scene, ct, gtv_path = lung
    segmentation, _ = result_writer.write_result(scene, gtv_path, ct, None, "GTV", lambda n: None, lambda q: False)
    scene_io.write_segmentation(segmentation, tmp_path / "loaded.seg.nrrd")
    loaded = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "loaded")
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(tmp_path / "loaded.seg.nrrd"))
    assert storage.ReadData(loaded)
    assert loaded.GetNodeReference(loaded.GetReferenceImageGeometryReferenceRole()) is None
    module, log = module_logic(scene), []
    with pytest.raises(ValueError, match="no reference CT"):
        module.export(parameters(loaded, "nrrd"), tmp_path / "out", lambda p: None, log.append)
    editor = scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
    editor.SetSingletonTag("SegmentEditor")
    editor.SetAndObserveSegmentationNode(loaded)
    editor.SetAndObserveSourceVolumeNode(ct)
    path = module.export(parameters(loaded, "nrrd"), tmp_path / "out", lambda p: None, log.append)
    assert "exported on 2: CT (the Segment Editor's source volume)" in log[-1]
    gtv = sitk.GetArrayFromImage(sitk.ReadImage(str(gtv_path))) > 0
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(path))) > 0, gtv)
    editor.SetAndObserveSegmentationNode(None)
    module.export(parameters(loaded, "nifti", input_volume=ct), tmp_path / "out", lambda p: None, log.append)
    assert "(the input CT)" in log[-1]


# --- W8: uncompressed work inputs ----------------------------------------------------------------------------------
def test_work_inputs_are_written_uncompressed(lung, tmp_path):
    scene, ct, gtv_path = lung
    job = flows.prepare_segmentation(ct, [tmp_path / "model.safetensors"], tmp_path / "work")
    header = job.files[0].read_bytes()[:1000].decode("latin-1")
    assert job.files[0].name == "input.nrrd" and "encoding: raw" in header
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(job.files[0]))),
                          sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "ct.nrrd"))))


# --- B2/W11/C6: the SlicerRT study folder ---------------------------------------------------------------------------
def test_an_earlier_slicerrt_study_is_replaced_only_when_the_user_agrees_then_imported(lung, tmp_path):
    from test_slicer_rt_study_export import RecordingPlugin

    scene, ct, gtv_path = lung
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    patient = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "LUNG1-001")
    hierarchy.SetItemAttribute(patient, "DICOM.PatientID", "LUNG1-001")
    study = hierarchy.CreateStudyItem(patient, "CT")
    hierarchy.SetItemAttribute(study, "DICOM.StudyDate", "20080918")
    hierarchy.CreateItem(study, ct)
    segmentation, _ = result_writer.write_result(scene, gtv_path, ct, None, "GTV", lambda n: None, lambda q: False)
    folder = tmp_path / "out" / "LUNG1-001_20080918_2_CT_GTV"
    folder.mkdir(parents=True)
    (folder / "earlier.dcm").write_text("patient A's study")
    imported, questions = [], []
    module = module_logic(scene, slicerrt_plugin=lambda: RecordingPlugin(scene), import_dicom=imported.append,
                          confirm=lambda q: questions.append(q) or False)
    with pytest.raises(FileExistsError):
        module.export(parameters(segmentation, "rtstruct-slicerrt"), tmp_path / "out", lambda p: None, print)
    assert (folder / "earlier.dcm").exists() and str(folder) in questions[0] and not imported
    module.services.confirm = lambda q: True
    log = []
    assert module.export(parameters(segmentation, "rtstruct-slicerrt"), tmp_path / "out", lambda p: None,
                         log.append) == folder
    assert not (folder / "earlier.dcm").exists() and imported == [str(folder)]
    assert "Added to the DICOM database" in log[-1]


def test_segments_that_do_not_overlap_stay_one_label_map(lung, tmp_path):
    scene, ct, gtv_path = lung
    image = sitk.ReadImage(str(gtv_path))
    gtv = sitk.GetArrayFromImage(image) > 0
    apart = np.zeros_like(gtv)
    outside = np.argwhere(~gtv)[:200]                   # voxels the GTV does not reach
    apart[tuple(outside.T)] = True
    assert not (gtv & apart).any()
    written = sitk.GetImageFromArray(apart.astype(np.uint8))
    written.CopyInformation(image)
    sitk.WriteImage(written, str(tmp_path / "apart.nrrd"))
    segmentation = scene_io.import_gtv(scene, gtv_path, ct, "2: CT GTV")
    other = scene_io.import_gtv(scene, tmp_path / "apart.nrrd", ct, "other", segment_name="Cord")
    segmentation.GetSegmentation().CopySegmentFromSegmentation(other.GetSegmentation(),
                                                               other.GetSegmentation().GetNthSegmentID(0))
    assert not scene_io.overlapping_segments(scene, segmentation, ct)
    path = module_logic(scene).export(parameters(segmentation, "nrrd"), tmp_path / "out", lambda p: None, print)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["2_CT_GTV.nrrd"]
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    assert np.array_equal(labels == 1, gtv) and np.array_equal(labels == 2, apart)
