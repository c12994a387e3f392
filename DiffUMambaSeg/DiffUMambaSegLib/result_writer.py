"""Where an AI result goes: into the output segmentation, without ever silently replacing the user's work.

A result replaces the target's segment of the same name only when that segment is still exactly what an
earlier run wrote (its voxels' fingerprint, kept in a segment tag, still matches); a segment the user edited or
drew is replaced only after asking, and otherwise the result becomes a new segment beside it. Before any
replacement the Segment Editor's undo state is saved (``save_undo``), so Ctrl+Z in the editor restores the
previous segment. A target on another CT's grid is never written into: a new segmentation node is made.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from . import scene as scene_io

__all__ = ["FINGERPRINT_TAG", "fingerprint", "write_result"]

FINGERPRINT_TAG = "DiffUMambaSeg.fingerprint"


def _reference(segmentation):
    return segmentation.GetNodeReference(segmentation.GetReferenceImageGeometryReferenceRole())


def fingerprint(segmentation, segment_id: str) -> str:
    """SHA-256 of the absolute voxel indices of a segment (label maps may be shared by several segments and their
    extent and label values change as segments are added: only the segment's own voxels count)."""
    digest = hashlib.sha256()
    found = scene_io.segment_voxels(segmentation, segment_id)
    if found is None:
        return digest.hexdigest()
    mask, origin, _image = found
    indices = np.argwhere(mask) + np.array(origin)
    digest.update(indices.astype(np.int64).tobytes())
    return digest.hexdigest()


def _tag(segmentation, segment_id: str) -> str:
    import vtk

    value = vtk.reference("")
    found = segmentation.GetSegmentation().GetSegment(segment_id).GetTag(FINGERPRINT_TAG, value)
    return str(value) if found else ""


def _free_name(content, base: str) -> str:
    number = 2
    while content.GetSegmentIdBySegmentName(f"{base} {number}"):
        number += 1
    return f"{base} {number}"


def write_result(scene, label_path: Path, reference_volume, target, segment_name: str,
                 save_undo: Callable[[object], None], ask_replace: Callable[[str], bool],
                 new_name: Optional[str] = None):
    """Put the label map's GTV into ``target`` (or a new node when ``target`` is None, on another CT, or under
    another transform than the CT); returns (segmentation node, segment id).

    The label map holds the CT's own coordinates (the CT was written without its parent transform), so the
    result sits under the CT's parent transform and lands where the CT is shown. The result is read straight
    into a segment (``scene.gtv_segment``): no temporary node is added to the scene."""
    if target is None or _reference(target) is not reference_volume or (
            target.GetTransformNodeID() != reference_volume.GetTransformNodeID()):
        target = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", new_name or f"{reference_volume.GetName()} GTV")
        target.CreateDefaultDisplayNodes()
        scene_io.follow_transform(target, reference_volume)
        target.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
        scene_io.place_beside(scene, target, reference_volume)
    content = target.GetSegmentation()
    existing = content.GetSegmentIdBySegmentName(segment_name)
    name = segment_name
    if existing:
        if _tag(target, existing) == fingerprint(target, existing) or ask_replace(
                f"The segment '{segment_name}' of '{target.GetName()}' was edited after it was created. Replace "
                f"it with the new result? (Cancel keeps it and adds the result as a new segment.)"):
            save_undo(target)
            content.RemoveSegment(existing)
        else:
            name = _free_name(content, segment_name)
    elif content.GetNumberOfSegments():
        save_undo(target)
    segment = scene_io.gtv_segment(label_path, name)
    if not content.AddSegment(segment):
        raise OSError(f"could not add the result to {target.GetName()}")
    segment_id = content.GetSegmentIdBySegment(segment)
    content.GetSegment(segment_id).SetTag(FINGERPRINT_TAG, fingerprint(target, segment_id))
    return target, segment_id
