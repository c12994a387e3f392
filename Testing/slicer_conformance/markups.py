"""A click in a slice view while Slicer is in place mode: what the C++ markups widgets do to the REAL nodes.

Why: the markups displayable manager and its widgets (vtkSlicerMarkupsWidget, C++ and VTK rendering) cannot run
here, but what they do to MRML on a click is small and public: while the mouse hovers, a preview point follows it
in the selection node's active place node (position status "preview"); the click defines its position
(``PointPositionDefinedEvent``); a place mode that is not persistent then returns to ViewTransform.  A click when
Slicer is not in place mode places nothing (it would pan or rotate the view): that raises here, so a test cannot
place points the user could not.
"""

from __future__ import annotations

import vtk


def place_point(scene, ras):
    """Hover over and click at ``ras`` (world mm); returns (markups node, control point index)."""
    interaction = scene.GetNodeByID("vtkMRMLInteractionNodeSingleton")
    selection = scene.GetNodeByID("vtkMRMLSelectionNodeSingleton")
    if interaction is None or interaction.GetCurrentInteractionMode() != interaction.Place:
        raise RuntimeError("Slicer is not in place mode: a click in a view would not place a point")
    node = scene.GetNodeByID(selection.GetActivePlaceNodeID() or "")
    if node is None or not node.IsA("vtkMRMLMarkupsNode"):
        raise RuntimeError("no active markups node to place into (the selection node names none)")
    x, y, z = (float(c) for c in ras)
    was_modifying = node.StartModify()                 # hover: the preview point under the mouse
    index = node.AddControlPointWorld(vtk.vtkVector3d(x, y, z), "")
    node.SetNthControlPointPositionWorld(index, x, y, z, node.PositionPreview)
    node.EndModify(was_modifying)
    node.SetNthControlPointPositionWorld(index, x, y, z)   # the click
    if not interaction.GetPlaceModePersistence():
        interaction.SetCurrentInteractionMode(interaction.ViewTransform)
    return node, index
