"""The scene side of click corrections (MRML only, no Qt): the clicks in the two point lists, the segment as a
mask file for the worker, the worker's result back into the SAME segment, and which slices the user edited.

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
           "replace_segment", "changed_slices"]

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


def write_mask(scene, segmentation, segment_id: str, volume, path: Path) -> Path:
    """The segment as a 0/1 label map on the volume's grid (uncompressed: it is written on every click)."""
    return scene_io.export_labelmap(scene, segmentation, volume, path, [_name(segmentation, segment_id)],
                                    compress=False)


def segment_mask(scene, segmentation, segment_id: str, volume) -> np.ndarray:
    """(k, j, i) 0/1 array of the segment on the volume's grid."""
    return scene_io.segment_array(scene, segmentation, _name(segmentation, segment_id), volume)


def replace_segment(scene, segmentation, segment_id: str, label_path: Path) -> None:
    """The segment's voxels become the label map's foreground (value > 0); its ID, name, colour and terminology stay,
    and so does every other segment (the Segment Editor's own way of writing an effect's result)."""
    import slicer

    logic = slicer.vtkSlicerSegmentationsModuleLogic
    _name(segmentation, segment_id)
    with scene_io.scratch_nodes(scene):
        labelmap = scene_io.read_volume(scene, label_path, "correction result", labelmap=True)
        image = logic.CreateOrientedImageDataFromVolumeNode(labelmap)
        if not logic.SetBinaryLabelmapToSegment(image, segmentation, segment_id, logic.MODE_REPLACE):
            raise OSError(f"could not write {Path(label_path).name} into the segment")


def changed_slices(current: np.ndarray, previous: Optional[np.ndarray]) -> list[int]:
    """The k indices (the image's slice axis, first axis of a (k, j, i) array) where ``current`` differs."""
    if previous is None or previous.shape != current.shape:
        return []
    return [int(k) for k in np.flatnonzero((current != previous).reshape(current.shape[0], -1).any(axis=1))]
