"""The module's embedded Segment Editor, set up and torn down the way Slicer's own SegmentEditor module does it
(``Modules/Scripted/SegmentEditor/SegmentEditor.py``): the *singleton* editor node tagged "SegmentEditor" (so the
core Segment Editor shows the same state and a reload makes no new node), selected again after File > Close
Scene, keyboard shortcuts only while the module is shown, and on leaving the module no active effect (a Paint
effect left active would keep painting in the slice views after the user left). Also as there
(SegmentEditor.py:68-79, 149-153): effects registered after the widget was built (SegmentEditorExtraEffects
registers at startupCompleted, so when this is the startup module they come later) are added on the effect
factory's ``effectRegistered(QString)`` by ``updateEffectList()``; and after a scene import (loading an .mrb
into the scene) the editor is put on the scene's singleton node again, which the import may have replaced.

The editor widget and the effect factory (``slicer.qSlicerSegmentEditorEffectFactory.instance()``) are passed
in (strict stand-ins in the tests).
"""

from __future__ import annotations

__all__ = ["SINGLETON_TAG", "EmbeddedEditor"]

SINGLETON_TAG = "SegmentEditor"
UNDO_STATES = 10          # as the core Segment Editor


class EmbeddedEditor:
    def __init__(self, widget, scene, effectFactory=None):
        self.widget, self.scene, self.node, self.entered = widget, scene, None, False
        self.widget.setMaximumNumberOfUndoStates(UNDO_STATES)
        self.selectNode()    # before the scene reaches the widget, so its automatic selections are saved in the node
        self.effectFactory = effectFactory
        if effectFactory is not None:
            effectFactory.connect("effectRegistered(QString)", self.onEffectRegistered)
        self._importTag = scene.AddObserver(scene.EndImportEvent, self.onSceneEndImport)

    def onEffectRegistered(self, name=None) -> None:
        self.widget.updateEffectList()

    def onSceneEndImport(self, caller=None, event=None) -> None:
        if self.entered:
            self.selectNode()
            self.widget.updateWidgetFromMRML()

    def cleanup(self) -> None:
        """When the module widget goes (reload, application exit): the factory outlives it."""
        if self.effectFactory is not None:
            self.effectFactory.disconnect("effectRegistered(QString)", self.onEffectRegistered)
            self.effectFactory = None
        if self._importTag is not None:
            self.scene.RemoveObserver(self._importTag)
            self._importTag = None

    def selectNode(self) -> None:
        node = self.scene.GetSingletonNode(SINGLETON_TAG, "vtkMRMLSegmentEditorNode")
        if node is None:
            node = self.scene.CreateNodeByClass("vtkMRMLSegmentEditorNode")
            node.UnRegister(None)
            node.SetSingletonTag(SINGLETON_TAG)
            node = self.scene.AddNode(node)
        if node is not self.node:
            self.node = node
            self.widget.setMRMLSegmentEditorNode(node)

    def enter(self) -> None:
        self.entered = True
        self.widget.installKeyboardShortcuts()
        self.selectNode()
        self.widget.updateWidgetFromMRML()

    def exit(self) -> None:
        self.entered = False
        self.widget.setActiveEffect(None)
        self.widget.uninstallKeyboardShortcuts()
        self.widget.removeViewObservations()

    def sceneStartClose(self) -> None:
        self.node = None
        self.widget.setSegmentationNode(None)
        self.widget.removeViewObservations()

    def sceneEndClose(self, entered: bool) -> None:
        if entered:
            self.selectNode()
            self.widget.updateWidgetFromMRML()

    def show(self, segmentation, sourceVolume) -> None:
        self.widget.setSegmentationNode(segmentation)
        self.widget.setSourceVolumeNode(sourceVolume)

    def saveStateForUndo(self, segmentation) -> None:
        """The editor's own undo state of ``segmentation`` (Ctrl+Z in the editor brings it back); scene undo is off
        in Slicer by default, so ``mrmlScene.SaveStateForUndo()`` would keep nothing."""
        if self.widget.segmentationNode() is not segmentation:
            self.widget.setSegmentationNode(segmentation)
        self.widget.saveStateForUndo()
