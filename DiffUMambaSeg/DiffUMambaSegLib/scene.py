"""Volume and segmentation nodes <-> the files the ``diffumamba`` command line reads and writes.

Only MRML classes (nodes, storage nodes, ``vtkSlicerSegmentationsModuleLogic``) are used, never
``slicer.app`` or ``slicer.util``'s scene-global helpers, so the same code runs in Slicer and in the tests
(PyPI ``slicer-core``). Every function takes the scene it works on.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

__all__ = ["GTV_COLOR", "GTV_TERMINOLOGY", "segment_terminology", "empty_segment", "empty_gtv", "place_beside", "write_volume", "write_segmentation", "read_volume", "import_gtv", "segment_array",
           "export_labelmap", "scratch_nodes"]

GTV_COLOR = (1.0, 0.0, 0.0)
# Slicer's terminology entry (context~category~type~type modifier~anatomic context~region~region modifier),
# the same codes the command line writes into .seg.nrrd and DICOM SEG: a primary malignant neoplasm of the lung.
# The codes carry the meaning; the context is the module's own small terminology file (Slicer shows the codes
# even where it is not loaded).
TERMINOLOGY_CONTEXT = "DiffUMambaSeg - lung tumour"    # Resources/DiffUMambaSeg.term.json, loaded at startup
GTV_TERMINOLOGY = (TERMINOLOGY_CONTEXT +
                   "~SCT^49755003^Morphologically Abnormal Structure~SCT^86049000^Malignant neoplasm, primary~^^"
                   "~Anatomic codes - DICOM master list~SCT^39607008^Lung~^^")


def _slicer():
    import slicer

    return slicer


def write_volume(volume_node, path: Path, compress: bool = True) -> Path:
    """Write a volume node to NIfTI/NRRD with its geometry (what the command line reads); ``compress=False`` for
    files written while the user waits (a click's mask: writing is then several times faster)."""
    slicer = _slicer()
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetUseCompression(1 if compress else 0)
    if not storage.WriteData(volume_node):
        raise OSError(f"could not write volume {volume_node.GetName()} to {path}")
    return Path(path)


def write_segmentation(segmentation_node, path: Path) -> Path:
    """Write a segmentation node to ``.seg.nrrd`` (segment names, colours and terminology kept)."""
    slicer = _slicer()
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(path))
    if not storage.WriteData(segmentation_node) or not Path(path).is_file():
        raise OSError(f"could not write {segmentation_node.GetName()} to {path}")
    return Path(path)


def read_volume(scene, path: Path, name: Optional[str] = None, labelmap: bool = False):
    """A new scalar (or label map) volume node in ``scene`` read from ``path``."""
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode",
                                   name or Path(path).name.split(".")[0])
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(path))
    if labelmap:
        storage.SetCenterImage(False)
    if not storage.ReadData(node):
        scene.RemoveNode(node)
        scene.RemoveNode(storage)
        raise OSError(f"could not read {path} as a volume")
    node.SetAndObserveStorageNodeID(storage.GetID())
    return node


def import_gtv(scene, label_path: Path, reference_volume, name: str, segment_name: str = "GTV",
               color: Sequence[float] = GTV_COLOR, terminology: str = GTV_TERMINOLOGY, label_value: int = 1):
    """A segmentation node holding the voxels of ``label_value`` in ``label_path`` as one coded segment.

    The segmentation's geometry is the reference volume's (so editing and DICOM SEG export work on the CT
    grid); an empty result still gives the segment, ready to be drawn.
    """
    slicer = _slicer()
    labelmap = read_volume(scene, label_path, "diffumamba result", labelmap=True)
    try:
        segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
        segmentation.CreateDefaultDisplayNodes()
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
        _keep_only(labelmap, label_value)
        if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentation):
            raise OSError(f"could not import {label_path} into a segmentation")
        content = segmentation.GetSegmentation()
        if content.GetNumberOfSegments() == 0:
            if not content.AddSegment(empty_segment(segment_name)):
                raise OSError(f"could not add an empty {segment_name} segment")
        _style(content.GetNthSegment(0), segment_name, color, terminology)
        place_beside(scene, segmentation, reference_volume)
        return segmentation
    finally:
        for node in (labelmap.GetDisplayNode(), labelmap.GetStorageNode(), labelmap):
            if node is not None:
                scene.RemoveNode(node)


def empty_gtv(scene, reference_volume, name: str, segment_name: str = "GTV"):
    """A new segmentation node on the reference volume's grid holding one empty, coded GTV segment (coloured and
    coded as ``import_gtv``'s), placed beside the volume: what "Segment from a click" fills with the worker's answer."""
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    segmentation.CreateDefaultDisplayNodes()
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
    content = segmentation.GetSegmentation()
    if not content.AddSegment(empty_segment(segment_name)):
        scene.RemoveNode(segmentation)
        raise OSError(f"could not add an empty {segment_name} segment")
    _style(content.GetNthSegment(0), segment_name, GTV_COLOR, GTV_TERMINOLOGY)
    place_beside(scene, segmentation, reference_volume)
    return segmentation


def _style(segment, name: str, color: Sequence[float], terminology: str) -> None:
    slicer = _slicer()
    segment.SetName(name)
    segment.SetColor(*[float(c) for c in color])
    segment.SetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), terminology)
    segment.SetNameAutoGenerated(False)
    segment.SetColorAutoGenerated(False)


def empty_segment(name: str):
    """A segment with an empty binary label map, built by hand: ``AddEmptySegment`` needs the converter rules
    that only the Slicer application registers."""
    slicer = _slicer()
    segment = slicer.vtkSegment()
    segment.SetName(name)
    segment.AddRepresentation(slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName(),
                              slicer.vtkOrientedImageData())
    return segment


def place_beside(scene, node, reference) -> None:
    """Put ``node`` in the subject hierarchy folder (the DICOM study) that holds ``reference``, so the result
    sits with its CT and DICOM export finds the patient and study."""
    slicer = _slicer()
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    if hierarchy is None:
        return
    reference_item = hierarchy.GetItemByDataNode(reference)
    parent = hierarchy.GetItemParent(reference_item) if reference_item else 0
    if not parent or parent == hierarchy.GetSceneItemID():
        return
    item = hierarchy.GetItemByDataNode(node)
    if item:                      # the application made an item for the new node: move it
        hierarchy.SetItemParent(item, parent)
    else:                         # no application (tests, scripts): make it there
        hierarchy.CreateItem(parent, node)


def segment_terminology(segment) -> str:
    """The terminology entry string of a ``vtkSegment`` (VTK's Python wrapping returns tags through an argument)."""
    import vtk

    slicer = _slicer()
    value = vtk.reference("")
    segment.GetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), value)
    return str(value)


def _keep_only(labelmap, value: int) -> None:
    from vtk.util import numpy_support

    scalars = labelmap.GetImageData().GetPointData().GetScalars()
    array = numpy_support.vtk_to_numpy(scalars)
    array[:] = np.where(array == value, 1, 0).astype(array.dtype)
    scalars.Modified()
    labelmap.GetImageData().Modified()


def segment_array(scene, segmentation, segment_name: str, reference_volume) -> np.ndarray:
    """(k, j, i) 0/1 array of one segment on the reference volume's grid (as the command line's arrays)."""
    slicer = _slicer()
    from vtk.util import numpy_support

    segment_id = segmentation.GetSegmentation().GetSegmentIdBySegmentName(segment_name)
    if not segment_id:
        raise KeyError(f"no segment named {segment_name!r}")
    with scratch_nodes(scene):
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
        ids = _string_array([segment_id])
        if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(segmentation, ids, labelmap,
                                                                                     reference_volume):
            raise OSError(f"could not export segment {segment_name}")
        image = labelmap.GetImageData()
        i, j, k = image.GetDimensions()
        return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(k, j, i).copy()


def export_labelmap(scene, segmentation, reference_volume, path: Path, segment_names: Optional[Sequence[str]] = None,
                    compress: bool = True) -> Path:
    """Segments as a label map (1, 2, ... in segment order) on the reference volume's grid, NIfTI or NRRD."""
    slicer = _slicer()
    content = segmentation.GetSegmentation()
    names = segment_names or [content.GetNthSegment(n).GetName() for n in range(content.GetNumberOfSegments())]
    ids = _string_array([content.GetSegmentIdBySegmentName(n) for n in names])
    with scratch_nodes(scene):
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
        if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(segmentation, ids, labelmap,
                                                                                     reference_volume):
            raise OSError("could not export the segmentation to a label map")
        return write_volume(labelmap, path, compress)


@contextmanager
def scratch_nodes(scene):
    """Remove every node added inside the block (temporary label maps and the colour tables made for them);
    the subject hierarchy, a scene singleton, stays."""
    before = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
    try:
        yield
    finally:
        added = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
        for node in added:
            if node.GetID() not in before and not node.IsA("vtkMRMLSubjectHierarchyNode"):
                scene.RemoveNode(node)


def _string_array(values):
    import vtk

    array = vtk.vtkStringArray()
    for value in values:
        array.InsertNextValue(value)
    return array
