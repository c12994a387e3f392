"""The glue to SlicerRT's RTSTRUCT exporter, on a real MRML scene and subject hierarchy (slicer-core) with a
recording stand-in for the plugin: SlicerRT itself needs the application (its C++ export is not on PyPI)."""

import sys
from pathlib import Path

import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core (installed by scripts/install.sh) is needed")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "DiffUMambaSeg"))

from DiffUMambaSegLib import rt_study_export  # noqa: E402


class Exportable:
    def __init__(self, item, modality):
        self.item, self.directory, self.tags = item, "", {"Modality": modality, "PatientName": "Anonymous"}

    def tag(self, name):
        return self.tags.get(name, "")

    def setTag(self, name, value):
        self.tags[name] = value


class RecordingPlugin:
    """Answers like SlicerRT's plugin: CT for a volume, RTSTRUCT for a segmentation; ``error`` is its reply."""

    def __init__(self, scene, error=""):
        self.hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
        self.error, self.exported = error, None

    def examineForExport(self, item):
        node = self.hierarchy.GetItemDataNode(item)
        modality = "RTSTRUCT" if node.IsA("vtkMRMLSegmentationNode") else "CT"
        return [Exportable(item, modality)]

    def export(self, exportables):
        self.exported = exportables
        return self.error


@pytest.fixture
def study():
    scene = slicer.vtkMRMLScene()
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    patient = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "LUNG1-001")
    hierarchy.SetItemAttribute(patient, "DICOM.PatientName", "LUNG1-001")
    hierarchy.SetItemAttribute(patient, "DICOM.PatientID", "LUNG1-001")
    hierarchy.SetItemAttribute(patient, "Other", "not a DICOM tag")
    study = hierarchy.CreateStudyItem(patient, "CT study")
    hierarchy.SetItemAttribute(study, "DICOM.StudyInstanceUID", "1.2.3.4")
    ct = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "CT")
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "CT GTV")
    for node in (ct, segmentation):
        hierarchy.CreateItem(study, node)
    return scene, ct, segmentation


def test_the_ct_and_the_segmentation_are_exported_together_with_the_patient_tags(study, tmp_path):
    scene, ct, segmentation = study
    plugin = RecordingPlugin(scene)
    out = rt_study_export.export_rt_study(scene, plugin, segmentation, ct, tmp_path / "rt")
    assert out.is_dir()
    assert [e.tag("Modality") for e in plugin.exported] == ["CT", "RTSTRUCT"]      # a study, not the segmentation alone
    for exportable in plugin.exported:
        assert exportable.directory == str(out)
        assert exportable.tag("PatientName") == "LUNG1-001"
        assert exportable.tag("StudyInstanceUID") == "1.2.3.4"
        assert "Other" not in exportable.tags


def test_the_exporter_message_is_raised(study, tmp_path):
    scene, ct, segmentation = study
    with pytest.raises(RuntimeError, match="primary anatomical image"):
        rt_study_export.export_rt_study(scene, RecordingPlugin(scene, "no primary anatomical image"), segmentation, ct,
                                        tmp_path / "rt")


def test_nodes_outside_the_hierarchy_are_refused(tmp_path):
    scene = slicer.vtkMRMLScene()
    slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    ct = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "CT")
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "GTV")
    plugin = RecordingPlugin(scene)
    with pytest.raises(ValueError, match="subject hierarchy"):
        rt_study_export.export_rt_study(scene, plugin, segmentation, ct, tmp_path / "rt")
    assert plugin.exported is None and not (tmp_path / "rt").exists()


def test_the_plugin_is_found_only_when_slicerrt_registered_it():
    assert rt_study_export.slicerrt_plugin({}) is None
    assert rt_study_export.slicerrt_plugin(None) is None
    assert isinstance(rt_study_export.slicerrt_plugin({"DicomRtImportExportPlugin": dict}), dict)
