"""The Slicer module's flows on real MRML classes (PyPI slicer-core, no application): a real CT in a volume
node -> files -> the real ``diffumamba`` command line -> a segmentation node checked voxel for voxel against
the command line's own output, with its name, colour, terminology and geometry; the propagation flow likewise;
a cancelled run leaves the scene unchanged."""

import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer", reason="slicer-core (installed by scripts/install.sh) is needed")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "DiffUMambaSeg"))

from conftest import train_tiny  # noqa: E402
from DiffUMambaSegLib import flows, scene as scene_io  # noqa: E402
from DiffUMambaSegLib.runner import CommandRunner  # noqa: E402


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny Diff-UMamba trained a few iterations on CT phantoms: its output is what it is; we check transport."""
    from diffumamba.demo.run import write_dataset

    root = tmp_path_factory.mktemp("slicer_model")
    write_dataset(root / "Dataset900_Phantom", 2, 0, seed=0)
    return train_tiny(root / "Dataset900_Phantom", root)


@pytest.fixture
def sarcoma_scene(shared_data):
    scene = slicer.vtkMRMLScene()
    folder = shared_data / "sts_sarcoma_ibsi" / "STS_019" / "nifti"
    return scene, scene_io.read_volume(scene, folder / "CT_image.nii.gz", "STS_019 CT"), folder


def node_ids(scene):
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())
            if not scene.GetNthNode(i).IsA("vtkMRMLSubjectHierarchyNode")}


def run(job):
    runner = CommandRunner(job.command)
    runner.start()
    result = runner.wait(timeout=600)
    assert result.ok, result.error
    return result


def test_segmentation_flow_matches_the_command_line(sarcoma_scene, tiny_model, tmp_path):
    scene, ct, folder = sarcoma_scene
    job = flows.prepare_segmentation(ct, [tiny_model], tmp_path / "work", device="cpu")
    written = sitk.ReadImage(str(job.files[0]))
    original = sitk.ReadImage(str(folder / "CT_image.nii.gz"))
    assert np.array_equal(sitk.GetArrayFromImage(written), sitk.GetArrayFromImage(original))   # the node, unchanged
    assert np.allclose(written.GetOrigin(), original.GetOrigin(), atol=1e-3)
    nodes_before = node_ids(scene)
    run(job)
    segmentation = flows.finish_segmentation(scene, job, ct)
    segment = segmentation.GetSegmentation().GetNthSegment(0)
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 1 and segment.GetName() == "GTV"
    assert scene_io.segment_terminology(segment) == scene_io.GTV_TERMINOLOGY
    assert np.allclose(segment.GetColor(), scene_io.GTV_COLOR)
    cli = sitk.GetArrayFromImage(sitk.ReadImage(str(job.result))) > 0
    assert cli.any()
    assert np.array_equal(scene_io.segment_array(scene, segmentation, "GTV", ct) > 0, cli)
    geometry = segmentation.GetNodeReferenceID("referenceImageGeometryRef")
    assert geometry == ct.GetID()
    added = sorted(scene.GetNodeByID(i).GetClassName() for i in node_ids(scene) - nodes_before)
    assert added == ["vtkMRMLSegmentationDisplayNode", "vtkMRMLSegmentationNode"]   # no temporary node left


def test_propagation_flow_matches_the_command_line(sarcoma_scene, tmp_path):
    scene, ct, folder = sarcoma_scene
    prior_gtv = scene_io.import_gtv(scene, folder / "CT_mask.nii.gz", ct, "prior GTV")
    job = flows.prepare_propagation(scene, ct, prior_gtv, ct, tmp_path / "work")
    assert [f.name for f in job.files] == ["prior.nrrd", "current.nrrd", "prior_gtv.nrrd"]      # uncompressed
    exported = sitk.GetArrayFromImage(sitk.ReadImage(str(job.files[2]))) > 0
    assert np.array_equal(exported, sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "CT_mask.nii.gz"))) > 0)
    run(job)
    segmentation, report = flows.finish_propagation(scene, job, ct)
    cli = sitk.GetArrayFromImage(sitk.ReadImage(str(job.result))) > 0
    assert np.array_equal(scene_io.segment_array(scene, segmentation, "GTV", ct) > 0, cli)
    assert report["refined"] is False and report["prior_volume_ml"] > 0
    assert report["dice_registered_prior_vs_result"] == 1.0
    overlap = 2 * (cli & exported).sum() / (cli.sum() + exported.sum())
    assert overlap > 0.95                                     # the same scan: registration is about the identity


def test_prior_gtv_segments_are_found_by_name(sarcoma_scene, tmp_path):
    scene, ct, folder = sarcoma_scene
    single = scene_io.import_gtv(scene, folder / "CT_mask.nii.gz", ct, "prior", segment_name="Tumour")
    assert flows.gtv_segments(single) == ["Tumour"]                    # the only segment
    with pytest.raises(ValueError, match="no segment 'GTV'; it has Tumour"):
        flows.prepare_propagation(scene, ct, single, ct, tmp_path / "work", segment_name="GTV")
    rtstruct_like = scene_io.import_gtv(scene, folder / "CT_mask.nii.gz", ct, "RTSTRUCT", segment_name="GTV-1")
    assert rtstruct_like.GetSegmentation().AddSegment(scene_io.empty_segment("Spinal cord"))
    assert flows.gtv_segments(rtstruct_like) == ["GTV-1"]               # GTV-1 chosen, the cord not
    with pytest.raises(ValueError, match="no segment named like GTV; it has Spinal cord"):
        two = scene_io.import_gtv(scene, folder / "CT_mask.nii.gz", ct, "y", segment_name="Spinal cord")
        two.GetSegmentation().AddSegment(scene_io.empty_segment("Lung"))
        flows.gtv_segments(two)


def test_a_cancelled_run_leaves_the_scene_unchanged(sarcoma_scene, tiny_model, tmp_path):
    scene, ct, _ = sarcoma_scene
    job = flows.prepare_segmentation(ct, [tiny_model], tmp_path / "work", device="cpu")
    nodes_before = node_ids(scene)
    runner = CommandRunner(job.command)
    runner.start()
    runner.cancel(grace_seconds=1)
    result = runner.wait(timeout=30)
    assert result.cancelled and not result.ok
    assert node_ids(scene) == nodes_before and not job.result.exists()


def test_an_empty_result_still_gives_the_segment(sarcoma_scene, tmp_path):
    scene, ct, folder = sarcoma_scene
    empty = sitk.ReadImage(str(folder / "CT_mask.nii.gz")) * 0
    sitk.WriteImage(empty, str(tmp_path / "empty.nii.gz"))
    segmentation = scene_io.import_gtv(scene, tmp_path / "empty.nii.gz", ct, "nothing")
    assert segmentation.GetSegmentation().GetNthSegment(0).GetName() == "GTV"
    assert not scene_io.segment_array(scene, segmentation, "GTV", ct).any()


def test_dicom_export_of_an_edited_segmentation(sarcoma_scene, shared_data, tmp_path):
    """Segment edited in the scene -> RTSTRUCT and SEG that reference the real CT series and hold the edit."""
    import pydicom

    from diffumamba.dicom.rtstruct import rasterise, read_rtstruct
    from diffumamba.dicom.series import choose_series, read_series, scan_folder

    scene, ct, folder = sarcoma_scene
    segmentation = scene_io.import_gtv(scene, folder / "CT_mask.nii.gz", ct, "reviewed GTV")
    edited = scene_io.segment_array(scene, segmentation, "GTV", ct).astype(bool)
    edited[:, :, : edited.shape[2] // 2] = False                       # the clinician removed the left half
    edit_path = tmp_path / "edited.nii.gz"
    image = sitk.ReadImage(str(folder / "CT_mask.nii.gz"))
    written = sitk.GetImageFromArray(edited.astype(np.uint8))
    written.CopyInformation(image)
    sitk.WriteImage(written, str(edit_path))
    reviewed = scene_io.import_gtv(scene, edit_path, ct, "edited GTV")
    dicom = shared_data / "sts_sarcoma_ibsi" / "STS_019" / "ct_dicom" / "image"
    files = sorted(dicom.iterdir())
    job = flows.prepare_dicom_export(scene, reviewed, ct, files, tmp_path / "work", tmp_path / "out", name="STS_019")
    run(job)
    series = choose_series(scan_folder(dicom))
    from dicom_validation import assert_valid_dicom

    for written in ("STS_019_rtstruct.dcm", "STS_019_seg.dcm"):
        assert_valid_dicom(tmp_path / "out" / written)
    back = rasterise(read_rtstruct(tmp_path / "out" / "STS_019_rtstruct.dcm").rois, read_series(series)) > 0
    assert np.array_equal(back, edited) and edited.any()
    seg = pydicom.dcmread(tmp_path / "out" / "STS_019_seg.dcm")
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series.uid
    with pytest.raises(ValueError, match="was not loaded from DICOM"):
        flows.prepare_dicom_export(scene, reviewed, ct, [], tmp_path / "w2", tmp_path / "o2")


def test_uncertainty_map_is_loaded_as_a_volume(sarcoma_scene, tiny_model, tmp_path):
    scene, ct, _ = sarcoma_scene
    job = flows.prepare_segmentation(ct, [tiny_model], tmp_path / "work", device="cpu", uncertainty=True)
    assert "--tta" in job.command and "--uncertainty" in job.command
    run(job)
    volume = flows.load_uncertainty(scene, job, "uncertainty")
    from vtk.util import numpy_support

    image = volume.GetImageData()
    i, j, k = image.GetDimensions()
    values = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(k, j, i)
    cli = sitk.GetArrayFromImage(sitk.ReadImage(str(job.uncertainty)))
    assert np.array_equal(values, cli) and 0 <= values.min() and values.max() <= 1
    assert flows.load_uncertainty(scene, flows.prepare_segmentation(ct, [tiny_model], tmp_path / "w2"), "x") is None


def test_the_result_is_placed_in_the_ct_study(sarcoma_scene):
    scene, ct, folder = sarcoma_scene
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    patient = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "STS_019")
    study = hierarchy.CreateStudyItem(patient, "CT study")
    hierarchy.CreateItem(study, ct)                      # as the DICOM module places a loaded series
    segmentation = scene_io.import_gtv(scene, folder / "CT_mask.nii.gz", ct, "GTV")
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(segmentation)) == study
