"""The scene side of click corrections (MRML only, no Qt): the clicks in the two point lists, the segment as a
mask file for the worker, the worker's result back into the SAME segment, and which slices the user edited.

The mask sent with a click is the segment cropped to its own voxels (the segmentation's grid, its effective extent;
nothing when it is empty): the worker puts it back on the CT's grid (``prior_mask._on_grid``: nearest neighbour,
exact for a crop of the same grid), so the GUI thread no longer exports and writes the whole CT grid per click.

Clicks are the *defined* control points of the include and exclude lists in world (RAS) coordinates: while
Slicer is in place mode the markups widget keeps a preview point under the mouse (position status "preview"),
which is not a click until the user clicks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from . import scene as scene_io

__all__ = ["Click", "INCLUDE", "EXCLUDE", "clicks", "remove_clicks", "move_clicks", "write_mask", "segment_mask",
           "replace_segment", "clear_segment", "changed_slices"]

INCLUDE, EXCLUDE = "include", "exclude"


@dataclass(frozen=True)
class Click:
    point: tuple                 # world (RAS) mm
    label: str                   # INCLUDE or EXCLUDE
    node_id: str                 # the point list holding it
    point_id: str                # its control point's ID (stable while other points are added or removed)

    def request(self) -> dict:
        return {"point": [round(float(c), 4) for c in self.point], "label": self.label}


def clicks(include, exclude) -> list[Click]:
    """The defined points of both lists (either may be None), include points first, each in placing order."""
    found = []
    for node, label in ((include, INCLUDE), (exclude, EXCLUDE)):
        if node is None:
            continue
        for index in range(node.GetNumberOfControlPoints()):
            if node.GetNthControlPointPositionStatus(index) != node.PositionDefined:
                continue
            point = [0.0, 0.0, 0.0]
            node.GetNthControlPointPositionWorld(index, point)
            found.append(Click(tuple(point), label, node.GetID(), node.GetNthControlPointID(index)))
    return found


def remove_clicks(scene, taken_back: Sequence[Click]) -> int:
    """Remove these points from their lists (a click the worker refused); returns how many were still there."""
    return _each_point(scene, taken_back, lambda node, index, click: node.RemoveNthControlPoint(index))


def move_clicks(scene, back: Sequence[Click]) -> int:
    """Put these points back where they were (an undone move); returns how many were still there."""
    return _each_point(scene, back, lambda node, index, click: node.SetNthControlPointPositionWorld(index, *click.point))


def _each_point(scene, clicks: Sequence[Click], action) -> int:
    """``action(node, index, click)`` for each click whose point is still in its list (found by its stable ID)."""
    done = 0
    for click in clicks:
        node = scene.GetNodeByID(click.node_id)
        index = node.GetNthControlPointIndexByID(click.point_id) if node is not None else -1
        if index >= 0:
            action(node, index, click)
            done += 1
    return done


def _name(segmentation, segment_id: str) -> str:
    segment = segmentation.GetSegmentation().GetSegment(segment_id)
    if segment is None:
        raise KeyError(f"the segment {segment_id!r} is no longer in {segmentation.GetName()}")
    return segment.GetName()


def write_mask(scene, segmentation, segment_id: str, path: Path) -> Optional[Path]:
    """The segment as a 0/1 label map cropped to its voxels, or None when it has none (the worker then starts from
    an empty mask). Without a reference volume ``ExportSegmentsToLabelmapNode`` exports on the segmentation's own
    grid at the segment's effective extent (vtkSlicerSegmentationsModuleLogic.h: "By default, the minimum necessary
    size is used"); uncompressed, as it is written on every click."""
    import slicer

    _name(segmentation, segment_id)
    with scene_io.scratch_nodes(scene):
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
        if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
                segmentation, [segment_id], labelmap):
            raise OSError(f"could not export the segment of {segmentation.GetName()}")
        image = labelmap.GetImageData()
        if image is None or 0 in image.GetDimensions():
            return None
        return scene_io.write_volume(labelmap, path, compress=False)


def segment_mask(scene, segmentation, segment_id: str, volume) -> np.ndarray:
    """(k, j, i) 0/1 array of the segment on the volume's grid."""
    return scene_io.segment_array(scene, segmentation, _name(segmentation, segment_id), volume)


def replace_segment(scene, segmentation, segment_id: str, label_path: Path, volume=None) -> Optional[np.ndarray]:
    """The segment's voxels become the label map's foreground (value != 0); its ID, name, colour and terminology stay,
    and so does every other segment (the Segment Editor's own way of writing an effect's result). Returns the
    label map as a (k, j, i) 0/1 array when it lies on ``volume``'s grid (the worker's answers do), so the caller
    needs no second export of the segment; else None.

    The label map is clipped to its voxels first: ``SetBinaryLabelmapToSegment`` keeps only the effective extent
    anyway, and finding it over a whole 512x512x300 grid took 0.25 s of the GUI thread per click (0.01 s clipped).
    ``CreateOrientedImageDataFromVolumeNode`` hands over ownership ("Need to take ownership of the created object",
    vtkSlicerSegmentationsModuleLogic.h:105-107): without ``UnRegister`` every click leaked one CT-sized image
    (the review's W3; Slicer's SegmentEditorMaskVolumeEffect.py:364-365 does the same)."""
    import slicer
    import vtk
    from vtk.util import numpy_support

    logic = slicer.vtkSlicerSegmentationsModuleLogic
    _name(segmentation, segment_id)
    with scene_io.scratch_nodes(scene):
        labelmap = scene_io.read_volume(scene, label_path, "correction result", labelmap=True)
        image = labelmap.GetImageData()
        i, j, k = image.GetDimensions()
        voxels = (numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(k, j, i) != 0).view(np.uint8)
        result = voxels if _on_grid(labelmap, volume) else None
        ks, js, is_ = (np.flatnonzero(voxels.any(axis=axes)) for axes in ((1, 2), (0, 2), (0, 1)))
        if not len(ks):
            clear_segment(segmentation, segment_id)
            return result
        x0, _, y0, _, z0, _ = image.GetExtent()
        clip = vtk.vtkImageClip()
        clip.SetInputData(image)
        clip.SetOutputWholeExtent(x0 + int(is_[0]), x0 + int(is_[-1]), y0 + int(js[0]), y0 + int(js[-1]),
                                  z0 + int(ks[0]), z0 + int(ks[-1]))
        clip.ClipDataOn()
        clip.Update()
        labelmap.SetAndObserveImageData(clip.GetOutput())
        oriented = logic.CreateOrientedImageDataFromVolumeNode(labelmap)
        oriented.UnRegister(None)
        if not logic.SetBinaryLabelmapToSegment(oriented, segmentation, segment_id, logic.MODE_REPLACE):
            raise OSError(f"could not write {Path(label_path).name} into the segment")
        return result


def clear_segment(segmentation, segment_id: str) -> None:
    """The segment without voxels (a deleted first click of a GTV made from a click; an empty answer)."""
    import slicer

    _name(segmentation, segment_id)
    if not slicer.vtkSlicerSegmentationsModuleLogic.ClearSegment(segmentation, segment_id):
        raise OSError(f"could not clear the segment of {segmentation.GetName()}")


def _on_grid(labelmap, volume) -> bool:
    """``labelmap`` has ``volume``'s dimensions and IJK-to-RAS matrix (its array is then on the volume's grid)."""
    import vtk

    image = labelmap.GetImageData()
    if volume is None or volume.GetImageData() is None or image is None or \
            image.GetDimensions() != volume.GetImageData().GetDimensions():
        return False
    matrices = []
    for node in (labelmap, volume):
        matrix = vtk.vtkMatrix4x4()
        node.GetIJKToRASMatrix(matrix)
        matrices.append([matrix.GetElement(r, c) for r in range(4) for c in range(4)])
    return bool(np.allclose(*matrices, atol=1e-4))


def changed_slices(current: np.ndarray, previous: Optional[np.ndarray]) -> list[int]:
    """The k indices (the image's slice axis, first axis of a (k, j, i) array) where ``current`` differs."""
    if previous is None or previous.shape != current.shape:
        return []
    return [int(k) for k in np.flatnonzero((current != previous).reshape(current.shape[0], -1).any(axis=1))]
