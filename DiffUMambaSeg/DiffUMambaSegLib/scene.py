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

__all__ = ["GTV_COLOR", "GTV_TERMINOLOGY", "segment_terminology", "segment_voxels", "empty_segment", "empty_gtv", "place_beside",
           "follow_transform", "write_volume", "write_segmentation", "read_volume", "read_detached", "import_gtv",
           "gtv_segment", "segment_array", "segment_ids", "export_labelmap", "export_segment_masks", "overlapping_segments",
           "scratch_nodes"]

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


def read_detached(path: Path, name: str):
    """A scalar volume node read from ``path`` but in no scene (added only once it is what the user keeps: a
    node added and removed again would flash in the node selectors); no storage node points at ``path``."""
    node = _slicer().vtkMRMLScalarVolumeNode()
    storage = _slicer().vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    if not storage.ReadData(node) or node.GetImageData() is None:
        raise OSError(f"could not read {path} as a volume")
    node.SetName(name)
    return node


def import_gtv(scene, label_path: Path, reference_volume, name: str, segment_name: str = "GTV",
               color: Sequence[float] = GTV_COLOR, terminology: str = GTV_TERMINOLOGY, label_value: int = 1):
    """A segmentation node holding the voxels of ``label_value`` in ``label_path`` as one coded segment.

    The segmentation's geometry is the reference volume's (so editing and DICOM SEG export work on the CT
    grid) and it sits under the volume's parent transform (the label map is in the volume's own coordinates,
    as ``write_volume`` wrote them); an empty result still gives the segment, ready to be drawn.
    """
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    segmentation.CreateDefaultDisplayNodes()
    follow_transform(segmentation, reference_volume)
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
    segment = gtv_segment(label_path, segment_name, color, terminology, label_value)
    if not segmentation.GetSegmentation().AddSegment(segment):
        scene.RemoveNode(segmentation)
        raise OSError(f"could not import {label_path} into a segmentation")
    place_beside(scene, segmentation, reference_volume)
    return segmentation


def gtv_segment(label_path: Path, segment_name: str = "GTV", color: Sequence[float] = GTV_COLOR,
                terminology: str = GTV_TERMINOLOGY, label_value: int = 1):
    """A coded ``vtkSegment`` holding the voxels of ``label_value`` in ``label_path``, in the file's own
    coordinates; read without adding any node to a scene (no temporary node shows in selectors or views)."""
    slicer = _slicer()
    labelmap = slicer.vtkMRMLLabelMapVolumeNode()
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(label_path))
    storage.SetCenterImage(False)
    if not storage.ReadData(labelmap) or labelmap.GetImageData() is None:
        raise OSError(f"could not read {label_path} as a volume")
    _keep_only(labelmap, label_value)
    image = slicer.vtkOrientedImageData()
    image.ShallowCopy(labelmap.GetImageData())
    import vtk

    matrix = vtk.vtkMatrix4x4()
    labelmap.GetIJKToRASMatrix(matrix)
    image.SetImageToWorldMatrix(matrix)
    segment = slicer.vtkSegment()
    segment.AddRepresentation(slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName(), image)
    _style(segment, segment_name, color, terminology)
    return segment


def follow_transform(node, reference) -> None:
    """Put ``node`` under ``reference``'s parent transform (not hardened): files hold the volume's own
    coordinates, so a result read from them lands where the CT is shown only under the same transform."""
    transform_id = reference.GetTransformNodeID() if reference is not None else None
    if transform_id != node.GetTransformNodeID():
        node.SetAndObserveTransformNodeID(transform_id)


def empty_gtv(scene, reference_volume, name: str, segment_name: str = "GTV"):
    """A new segmentation node on the reference volume's grid holding one empty, coded GTV segment (coloured and
    coded as ``import_gtv``'s), placed beside the volume: what "Segment from a click" fills with the worker's answer."""
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    segmentation.CreateDefaultDisplayNodes()
    follow_transform(segmentation, reference_volume)
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


def segment_voxels(segmentation, segment_id: str):
    """(mask, (z0, y0, x0), image) of one segment's own voxels in its binary label map: a (k, j, i) bool array over
    the label map's extent, where that extent starts, and the ``vtkOrientedImageData`` (spacing, geometry); None when
    the segment has no voxels stored. Label maps may be shared by several segments and their extent and label values
    change as segments are added: only this segment's label value counts."""
    slicer = _slicer()
    from vtk.util import numpy_support

    segment = segmentation.GetSegmentation().GetSegment(segment_id)
    image = segment.GetRepresentation(slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName())
    if image is None or image.GetPointData().GetScalars() is None:
        return None
    x0, x1, y0, y1, z0, z1 = image.GetExtent()
    if x1 < x0 or y1 < y0 or z1 < z0:
        return None
    voxels = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(z1 - z0 + 1, y1 - y0 + 1, x1 - x0 + 1)
    return voxels == segment.GetLabelValue(), (z0, y0, x0), image


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


def segment_ids(segmentation, names: Optional[Sequence[str]] = None) -> list[str]:
    """Segment IDs in segment order: all, or every segment whose name is in ``names`` (two segments of the same
    name are both taken; ``GetSegmentIdBySegmentName`` would find only the first)."""
    content = segmentation.GetSegmentation()
    ids = [content.GetNthSegmentID(n) for n in range(content.GetNumberOfSegments())]
    if names is None:
        return ids
    chosen = [i for i in ids if content.GetSegment(i).GetName() in set(names)]
    missing = [n for n in names if n not in {content.GetSegment(i).GetName() for i in chosen}]
    if missing:
        raise KeyError(f"no segment named {missing[0]!r}")
    return chosen


def _labelmap_array(scene, segmentation, ids: Sequence[str], reference_volume) -> tuple[np.ndarray, object]:
    """((k, j, i) label array of ``ids`` merged on the reference grid, the hidden label map node it came from)."""
    slicer = _slicer()
    from vtk.util import numpy_support

    labelmap = hidden_node(scene, "vtkMRMLLabelMapVolumeNode")
    if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(segmentation, _string_array(ids),
                                                                                 labelmap, reference_volume):
        raise OSError("could not export the segmentation to a label map")
    image = labelmap.GetImageData()
    i, j, k = image.GetDimensions()
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(k, j, i), labelmap


def segment_array(scene, segmentation, segment_name: str, reference_volume, segment_id: str = "") -> np.ndarray:
    """(k, j, i) 0/1 array of one segment (by name, or by ``segment_id``) on the reference volume's grid (as the
    command line's arrays)."""
    segment_id = segment_id or segmentation.GetSegmentation().GetSegmentIdBySegmentName(segment_name)
    if not segment_id:
        raise KeyError(f"no segment named {segment_name!r}")
    with scratch_nodes(scene):
        return _labelmap_array(scene, segmentation, [segment_id], reference_volume)[0].copy()


def export_labelmap(scene, segmentation, reference_volume, path: Path, segment_names: Optional[Sequence[str]] = None,
                    compress: bool = True, ids: Optional[Sequence[str]] = None) -> Path:
    """Segments as a label map (1, 2, ... in segment order) on the reference volume's grid, NIfTI or NRRD: all,
    those named ``segment_names`` (every segment of each name), or the segments ``ids``. Where segments overlap,
    the later one's value wins (``vtkSegmentation::GenerateMergedLabelmap``): see ``overlapping_segments``."""
    ids = list(ids) if ids is not None else segment_ids(segmentation, segment_names)
    with scratch_nodes(scene):
        _array, labelmap = _labelmap_array(scene, segmentation, ids, reference_volume)
        return write_volume(labelmap, path, compress)


def export_segment_masks(scene, segmentation, reference_volume, folder: Path, ids: Optional[Sequence[str]] = None,
                         suffix: str = ".nrrd", compress: bool = False) -> list[tuple[str, str, Path]]:
    """One 0/1 mask file per segment (by ID, so overlapping segments and segments of the same name each keep all
    their voxels) on the reference volume's grid: [(segment id, segment name, path)], files ``mask_<n>``."""
    content = segmentation.GetSegmentation()
    written = []
    for number, segment_id in enumerate(ids if ids is not None else segment_ids(segmentation)):
        path = export_labelmap(scene, segmentation, reference_volume, Path(folder) / f"mask_{number}{suffix}",
                               compress=compress, ids=[segment_id])
        written.append((segment_id, content.GetSegment(segment_id).GetName(), path))
    return written


def overlapping_segments(scene, segmentation, reference_volume, ids: Optional[Sequence[str]] = None) -> bool:
    """Whether any voxel belongs to two of the segments (then one label map cannot hold them). Segments that share
    a binary label map layer cannot overlap (one label value per voxel), so one union per layer is compared: one
    export per layer, not per segment."""
    ids = list(ids) if ids is not None else segment_ids(segmentation)
    content = segmentation.GetSegmentation()
    layers: dict = {}
    for segment_id in ids:
        layers.setdefault(content.GetLayerIndex(segment_id), []).append(segment_id)
    if len(layers) < 2:
        return False
    count = None
    with scratch_nodes(scene):
        for members in layers.values():
            mask = _labelmap_array(scene, segmentation, members, reference_volume)[0] > 0
            count = mask.astype(np.uint8) if count is None else count + mask
            if (count > 1).any():
                return True
    return False


def hidden_node(scene, class_name: str):
    """A node added to ``scene`` hidden from editors from the start: node selectors, the subject hierarchy and
    the Data module never list it (Slicer's temporary nodes do the same)."""
    node = getattr(_slicer(), class_name)()
    node.SetHideFromEditors(True)
    return scene.AddNode(node)


@contextmanager
def scratch_nodes(scene):
    """Remove every node added inside the block (temporary label maps and the colour tables made for them),
    each hidden from editors as it is added (an observer of the highest priority runs before the node
    selectors' and the subject hierarchy's), so none flashes in a selector; the subject hierarchy, a scene
    singleton, stays."""
    import vtk

    before = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}

    def hide(caller, event, node=None):
        if node is not None and not node.IsA("vtkMRMLSubjectHierarchyNode"):
            node.SetHideFromEditors(True)

    hide.CallDataType = vtk.VTK_OBJECT
    tag = scene.AddObserver(scene.NodeAddedEvent, hide, 1000.0)
    try:
        yield
    finally:
        scene.RemoveObserver(tag)
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
