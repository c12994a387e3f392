"""A click in a slice view while Slicer is in place mode: what the C++ markups widgets do to the REAL nodes.

Why: the markups displayable manager and its widgets (vtkSlicerMarkupsWidget, C++ and VTK rendering) cannot run
here, but what they do to MRML on a click is small and public: while the mouse hovers, a preview point follows it
in the selection node's active place node (position status "preview"); the click defines its position
(``PointPositionDefinedEvent``); a place mode that is not persistent then returns to ViewTransform.  A click when
Slicer is not in place mode places nothing (it would pan or rotate the view): that raises here, so a test cannot
place points the user could not.

``MarkupsLogic`` is what the Markups module's logic does to the scene when it is loaded (always, in Slicer): every
markups node added becomes the active place list (``vtkSlicerMarkupsLogic::OnMRMLSceneNodeAdded`` ->
``SetActiveList``), so the Markups toolbar then places into it, in any module (``place_from_toolbar``).
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


def place_from_toolbar(scene, ras, persistent=False):
    """The Markups toolbar's (or the mouse-mode toolbar's) Place button, then a click at ``ras``: place mode into the
    selection node's ACTIVE place list, whichever module is shown (Base/QTGUI/qSlicerMouseModeToolBar.cxx
    ``switchPlaceMode``: the interaction node goes to Place, the active place node is left as it is); a single
    placement unless ``persistent``. Returns (markups node, control point index)."""
    interaction = scene.GetNodeByID("vtkMRMLInteractionNodeSingleton")
    selection = scene.GetNodeByID("vtkMRMLSelectionNodeSingleton")
    if scene.GetNodeByID(selection.GetActivePlaceNodeID() or "") is None:
        # no active list: a click in place mode makes one of the active place class (the new node becomes the active
        # list through the Markups logic, as vtkSlicerMarkupsLogic::AddControlPoint's "no point list is active,
        # adding one first")
        scene.AddNewNodeByClass(selection.GetActivePlaceNodeClassName() or "vtkMRMLMarkupsFiducialNode")
    interaction.SetPlaceModePersistence(1 if persistent else 0)
    interaction.SetCurrentInteractionMode(interaction.Place)
    return place_point(scene, ras)


class MarkupsLogic:
    """The part of vtkSlicerMarkupsLogic (Slicer v5.12.3, Modules/Loadable/Markups/Logic/vtkSlicerMarkupsLogic.cxx)
    that changes what a module sees in the scene: ``OnMRMLSceneNodeAdded`` (:436-481) skips nodes added while the
    scene imports, restores or batch-processes, and otherwise makes a new markups node the active list "for adding
    to via the mouse" with ``SetActiveList`` (:576-): the selection node's active place node class name and ID
    (set through the Reference setters, so their events fire). Not emulated: the display node it adds when a node
    has none (``AutoCreateDisplayNodes``), the display node defaults, the JumpToPoint observers."""

    def __init__(self, scene):
        self.scene = scene

        def node_added(caller, event, node=None):
            self.on_node_added(node)

        node_added.CallDataType = vtk.VTK_OBJECT
        self._tag = scene.AddObserver(scene.NodeAddedEvent, node_added)
        self._callback = node_added

    def on_node_added(self, node):
        if node is None or not node.IsA("vtkMRMLMarkupsNode"):
            return
        if self.scene.IsImporting() or self.scene.IsRestoring() or self.scene.IsBatchProcessing():
            return
        self.set_active_list(node)

    def set_active_list(self, node):
        selection = self.scene.GetNodeByID("vtkMRMLSelectionNodeSingleton")
        if selection is None:
            return
        if selection.GetActivePlaceNodeClassName() != node.GetClassName():
            selection.SetReferenceActivePlaceNodeClassName(node.GetClassName())
        if selection.GetActivePlaceNodeID() != node.GetID():
            selection.SetReferenceActivePlaceNodeID(node.GetID())

    def get_active_list_id(self):
        selection = self.scene.GetNodeByID("vtkMRMLSelectionNodeSingleton")
        return (selection.GetActivePlaceNodeID() or "") if selection is not None else ""
