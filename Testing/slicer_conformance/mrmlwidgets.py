"""qMRML / qSlicer widget stand-ins (``slicer.qMRMLNodeComboBox`` ...), driven by the REAL scene.

Why: these widgets are where a module meets MRML.  The stand-ins keep their state in real
slicer-core objects the way the C++ widgets do: the node combo box observes the scene's
NodeRemovedEvent, the segment editor keeps its references in a real vtkMRMLSegmentEditorNode
and does undo/redo with a real vtkSegmentationHistory.
"""

from __future__ import annotations

import vtk

from .widgets import QObject, QWidget


def _slicer():
    import sys
    return sys.modules["slicer"]


class _SceneMixin:
    def setMRMLScene(self, scene):
        old = getattr(self, "_scene", None)
        if old is scene:
            return
        if old is not None:
            for tag in getattr(self, "_scene_tags", []):
                old.RemoveObserver(tag)
        object.__setattr__(self, "_scene", scene)
        object.__setattr__(self, "_scene_tags", [])
        if scene is not None:
            self._observe_scene(scene)
        if "mrmlSceneChanged" in type(self)._api().signals:
            self._emit("mrmlSceneChanged", scene)
        self._scene_changed()

    def mrmlScene(self):
        return getattr(self, "_scene", None)

    def _observe_scene(self, scene):
        pass

    def _scene_changed(self):
        pass


class qMRMLWidget(_SceneMixin, QWidget):
    _is_standin = True
    _api_source = ("header", "qMRMLWidget")


class qSlicerWidget(_SceneMixin, QWidget):
    _is_standin = True
    _api_source = ("app", "qslicerwidget_api")


class qSlicerScriptedLoadableModuleWidget(qMRMLWidget):
    """The parent Slicer gives a scripted module widget (qSlicerAbstractModuleWidget subclass).
    Added: ``reload()`` (used by slicer.util.reloadScriptedModule; it asks the session to build the
    new Python widget, as the C++ class does) and the ``isEntered`` property of
    qSlicerAbstractModuleWidget (read by the 5.12 scripted-module template after a scene close)."""

    _is_standin = True
    _api_source = ("header", "qMRMLWidget")
    _static_members = ("reload", "moduleName", "enter", "exit", "isEntered")

    @property
    def isEntered(self):
        session = self._session
        return session._shown is not None and session._widgets.get(session._shown, (None,))[0] is self

    def reload(self):
        self._session._rebuild_widget(self)

    def enter(self):
        self._python_widget.enter()

    def exit(self):
        self._python_widget.exit()


class qMRMLNodeComboBox(_SceneMixin, QWidget):
    _is_standin = True
    _api_source = ("header", "qMRMLNodeComboBox")
    _prop_defaults = {"enabled": True, "addEnabled": True, "removeEnabled": True, "editEnabled": False,
                      "renameEnabled": False, "showChildNodeTypes": True, "selectNodeUponCreation": True,
                      "noneDisplay": "None", "interactionNodeSingletonTag": "Singleton"}

    def __init__(self, *args):
        super().__init__(*args)
        object.__setattr__(self, "_current", None)

    # -- scene
    def _observe_scene(self, scene):
        tags = [scene.AddObserver(scene.NodeRemovedEvent, self._on_node_removed),
                scene.AddObserver(scene.NodeAddedEvent, self._on_node_added),
                scene.AddObserver(scene.EndCloseEvent, lambda *a: self._select_default())]
        self._on_node_removed.__func__.CallDataType = vtk.VTK_OBJECT
        self._on_node_added.__func__.CallDataType = vtk.VTK_OBJECT
        object.__setattr__(self, "_scene_tags", tags)

    def _scene_changed(self):
        self._select_default()

    def _on_node_removed(self, caller, event, node=None):
        if node is not None and node is self._current:
            self._set_current(None)
            self._select_default()

    def _on_node_added(self, caller, event, node=None):
        if node is not None and self._matches(node):
            self._emit("nodeAdded", node)
            if self._current is None and not self._props["noneEnabled"]:
                self._set_current(node)

    def _matches(self, node):
        types = self._props["nodeTypes"] or []
        if not types:
            return False
        if node.GetHideFromEditors() and not self._props["showHidden"]:
            return False
        for t in types:
            if node.IsA(t) if self._props["showChildNodeTypes"] else node.GetClassName() == t:
                if node.GetClassName() in (self._props["hideChildNodeTypes"] or []):
                    continue
                attrs = getattr(self, "_attributes", {}).get(t, {})
                if all(str(node.GetAttribute(k)) == str(v) if v is not None else node.GetAttribute(k) is not None
                       for k, v in attrs.items()):
                    return True
        return False

    def _nodes(self):
        scene = self.mrmlScene()
        if scene is None:
            return []
        out = []
        for i in range(scene.GetNumberOfNodes()):
            n = scene.GetNthNode(i)
            if self._matches(n):
                out.append(n)
        return out

    def _select_default(self):
        if self._current is not None and self._current in self._nodes():
            return
        nodes = self._nodes()
        self._set_current(None if self._props["noneEnabled"] or not nodes else nodes[0])

    def _set_nodeTypes(self, types):
        self._props["nodeTypes"] = list(types)
        self._select_default()

    def _set_current(self, node):
        if node is self._current:
            return
        object.__setattr__(self, "_current", node)
        self._emit("currentNodeChanged", node, signature="currentNodeChanged(vtkMRMLNode*)")
        self._emit("currentNodeChanged", node is not None, signature="currentNodeChanged(bool)")
        self._emit("currentNodeIDChanged", node.GetID() if node is not None else "")

    # -- API
    def currentNode(self):
        return self._current

    def _get_currentNodeID(self):
        return self._current.GetID() if self._current is not None else ""

    def _set_currentNodeID(self, node_id):
        self.setCurrentNodeID(node_id)

    def setCurrentNode(self, node):
        if isinstance(node, str):
            return self.setCurrentNodeID(node)
        if node is not None and node not in self._nodes():
            node = None  # Qt: a node the combo box does not list cannot become current
        if node is None and not self._props["noneEnabled"] and self._nodes():
            return
        self._set_current(node)

    def setCurrentNodeID(self, node_id):
        scene = self.mrmlScene()
        self.setCurrentNode(scene.GetNodeByID(node_id) if scene is not None and node_id else None)

    def nodeCount(self):
        return len(self._nodes()) + (1 if self._props["noneEnabled"] else 0)

    def nodeFromIndex(self, index):
        nodes = ([None] if self._props["noneEnabled"] else []) + self._nodes()
        return nodes[index] if 0 <= index < len(nodes) else None

    def setCurrentNodeIndex(self, index):
        self.setCurrentNode(self.nodeFromIndex(index))

    def addAttribute(self, node_type, name, value=None):
        attrs = getattr(self, "_attributes", {})
        attrs.setdefault(node_type, {})[name] = value
        object.__setattr__(self, "_attributes", attrs)
        self._select_default()

    def removeAttribute(self, node_type, name):
        getattr(self, "_attributes", {}).get(node_type, {}).pop(name, None)

    def addNode(self, node_type=None):
        scene = self.mrmlScene()
        node = scene.AddNewNodeByClass(node_type or self._props["nodeTypes"][0],
                                       self._props["baseName"] or "")
        if self._props["selectNodeUponCreation"]:
            self.setCurrentNode(node)
        self._emit("nodeAddedByUser", node)
        return node

    def removeCurrentNode(self):
        if self._current is not None:
            self.mrmlScene().RemoveNode(self._current)


CORE_EFFECTS = ("Paint", "Draw", "Erase", "Level tracing", "Grow from seeds", "Fill between slices", "Margin",
                "Hollow", "Smoothing", "Scissors", "Islands", "Logical operators", "Mask volume", "Threshold")


def _effect_factory_api():
    """Slicer v5.12.3 Modules/Loadable/Segmentations/EditorEffects/qSlicerSegmentEditorEffectFactory.h (not in the
    reference folder): Q_INVOKABLE static instance(), Q_INVOKABLE registerEffect / registeredEffects / copyEffects,
    signal effectRegistered(QString)."""
    from . import qtapi
    api = qtapi.Api("qSlicerSegmentEditorEffectFactory", source="hand: qSlicerSegmentEditorEffectFactory.h (v5.12.3)")
    api.methods |= {"instance", "registerEffect", "registeredEffects", "copyEffects"}
    api.signals["effectRegistered"] = ["effectRegistered(QString)"]
    return api.merged(qtapi.qt_api("QObject"))


def _scripted_effect_api():
    """qSlicerSegmentEditorScriptedEffect (EditorEffects/qSlicerSegmentEditorScriptedEffect.h and its base
    qSlicerSegmentEditorAbstractEffect.h, v5.12.3): the ``name`` property the factory registers it by (a scripted
    effect's __init__ sets ``scriptedEffect.name``), setPythonSource() and self() (not emulated)."""
    from . import qtapi
    api = qtapi.Api("qSlicerSegmentEditorScriptedEffect", source="hand: qSlicerSegmentEditorScriptedEffect.h (v5.12.3)")
    api.properties["name"] = ("QString", True)
    api.methods |= {"setPythonSource", "self"}
    return api.merged(qtapi.qt_api("QObject"))


def _register_hand_apis():
    from . import qtapi
    qtapi.effect_factory_api = _effect_factory_api
    qtapi.scripted_effect_api = _scripted_effect_api


_register_hand_apis()


class qSlicerSegmentEditorScriptedEffect(QObject):
    """A segment editor effect as extensions register it (SegmentEditorExtraEffects, ...): only its name."""

    _is_standin = True
    _api_source = ("app", "scripted_effect_api")


class qSlicerSegmentEditorEffectFactory(QObject):
    """The application's effect factory (``slicer.qSlicerSegmentEditorEffectFactory.instance()``), as in
    qSlicerSegmentEditorEffectFactory.cxx: ``registerEffect`` refuses an effect without a name or with a name
    already registered (returns False), else appends it and emits ``effectRegistered(name)``. A fresh session's
    factory holds the core effects (the Segmentations module registers them in its setup, before any module
    widget exists). A widget sees an effect registered after it was built only after ``updateEffectList()``."""

    _is_standin = True
    _api_source = ("app", "effect_factory_api")
    _static_members = ("instance",)
    _instance = None

    def __init__(self, *args):
        super().__init__(*args)
        object.__setattr__(self, "_effects", [])
        for name in CORE_EFFECTS:
            effect = qSlicerSegmentEditorScriptedEffect()
            effect.name = name
            self._effects.append(effect)

    @staticmethod
    def instance():
        cls = qSlicerSegmentEditorEffectFactory
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    @staticmethod
    def _reset():
        """A new application (session): a new singleton."""
        qSlicerSegmentEditorEffectFactory._instance = None

    def registerEffect(self, effect):
        if not isinstance(effect, qSlicerSegmentEditorScriptedEffect):
            raise TypeError(f"registerEffect(qSlicerSegmentEditorAbstractEffect*): got {effect!r}")
        if not effect.name or any(e.name == effect.name for e in self._effects):
            return False
        self._effects.append(effect)
        self._emit("effectRegistered", effect.name)
        return True

    def registeredEffects(self):
        return list(self._effects)


class qMRMLSegmentEditorWidget(qMRMLWidget):
    _is_standin = True
    _api_source = ("header", "qMRMLSegmentEditorWidget")
    _prop_defaults = {"enabled": True, "segmentationNodeSelectorVisible": True,
                      "sourceVolumeNodeSelectorVisible": True, "maskingSectionVisible": True,
                      "specifyGeometryButtonVisible": True, "show3DButtonVisible": True,
                      "addRemoveSegmentButtonsVisible": True, "autoShowSourceVolumeNode": True,
                      "switchToSegmentationsButtonVisible": True, "undoEnabled": True,
                      "maximumNumberOfUndoStates": 10, "effectColumnCount": 1, "unorderedEffectsVisible": True}

    def __init__(self, *args):
        super().__init__(*args)
        import slicer_core
        object.__setattr__(self, "_editor_node", None)
        object.__setattr__(self, "_history", slicer_core.vtkSegmentationHistory())
        object.__setattr__(self, "_shortcuts_installed", False)
        object.__setattr__(self, "_view_observations", False)
        object.__setattr__(self, "_active_effect", None)
        object.__setattr__(self, "_effect_names", [])
        object.__setattr__(self, "_effect_list_updates", [])
        self._history.SetMaximumNumberOfStates(10)
        self.updateEffectList()               # qMRMLSegmentEditorWidgetPrivate::init() ends with updateEffectList()

    # -- nodes (kept in the real vtkMRMLSegmentEditorNode, like the C++ widget)
    def setMRMLSegmentEditorNode(self, node):
        object.__setattr__(self, "_editor_node", node)
        self.updateWidgetFromMRML()

    def mrmlSegmentEditorNode(self):
        return self._editor_node

    def _need_editor_node(self, what):
        if self._editor_node is None:
            raise RuntimeError(f"qMRMLSegmentEditorWidget.{what}: no segment editor node set "
                               "(the real widget logs an error and does nothing)")
        return self._editor_node

    def segmentationNode(self):
        return self._editor_node.GetSegmentationNode() if self._editor_node is not None else None

    def segmentationNodeID(self):
        n = self.segmentationNode()
        return n.GetID() if n is not None else ""

    def sourceVolumeNode(self):
        return self._editor_node.GetSourceVolumeNode() if self._editor_node is not None else None

    def sourceVolumeNodeID(self):
        n = self.sourceVolumeNode()
        return n.GetID() if n is not None else ""

    def masterVolumeNode(self):
        return self.sourceVolumeNode()

    def masterVolumeNodeID(self):
        return self.sourceVolumeNodeID()

    def setSegmentationNode(self, node):
        ed = self._need_editor_node("setSegmentationNode")
        if node is ed.GetSegmentationNode():
            return
        ed.SetAndObserveSegmentationNode(node)
        self._history.RemoveAllStates()
        self._history.SetSegmentation(node.GetSegmentation() if node is not None else None)
        self._emit("segmentationNodeChanged", node)

    def setSegmentationNodeID(self, node_id):
        self.setSegmentationNode(self.mrmlScene().GetNodeByID(node_id) if node_id else None)

    def setSourceVolumeNode(self, node):
        ed = self._need_editor_node("setSourceVolumeNode")
        if node is ed.GetSourceVolumeNode():
            return
        ed.SetAndObserveSourceVolumeNode(node)
        self._emit("sourceVolumeNodeChanged", node)
        self._emit("masterVolumeNodeChanged", node)

    def setSourceVolumeNodeID(self, node_id):
        self.setSourceVolumeNode(self.mrmlScene().GetNodeByID(node_id) if node_id else None)

    def setMasterVolumeNode(self, node):
        self.setSourceVolumeNode(node)

    def setMasterVolumeNodeID(self, node_id):
        self.setSourceVolumeNodeID(node_id)

    def currentSegmentID(self):
        return self._editor_node.GetSelectedSegmentID() or "" if self._editor_node is not None else ""

    def setCurrentSegmentID(self, segment_id):
        self._need_editor_node("setCurrentSegmentID").SetSelectedSegmentID(segment_id)
        self._emit("currentSegmentIDChanged", segment_id)

    def updateWidgetFromMRML(self):
        pass

    # -- effects by name only (their tools are C++/Qt view interaction, not emulated): the widget's own copy of the
    # factory's effects, taken when it is built and by updateEffectList() (qMRMLSegmentEditorWidget.cxx:
    # updateEffectList copies the factory's effects it does not have yet, qSlicerSegmentEditorEffectFactory::
    # copyEffects); what a module must get right is which effect is active when it hands the views back (exit():
    # none) and that effects registered later reach its editor. ``_effect_list_updates``: the names each
    # updateEffectList() call added.

    def updateEffectList(self):
        added = [e.name for e in qSlicerSegmentEditorEffectFactory.instance().registeredEffects()
                 if e.name not in self._effect_names]
        self._effect_names.extend(added)
        self._effect_list_updates.append(added)

    def activeEffect(self):
        return getattr(self, "_active_effect", None)

    def setActiveEffect(self, effect):
        if effect is not None and effect not in self._effect_names:
            raise NotImplementedError(f"segment editor effect {effect!r} is not in this editor's effect list")
        object.__setattr__(self, "_active_effect", effect)
        if self._editor_node is not None:
            self._editor_node.SetActiveEffectName(effect or "")

    def setActiveEffectByName(self, name):
        if name and name not in self._effect_names:
            raise NotImplementedError(f"segment editor effect {name!r} is not in this editor's effect list")
        self.setActiveEffect(name or None)

    def effectByName(self, name):
        return name if name in self._effect_names else None

    def availableEffectNames(self):
        return list(self._effect_names)

    def effectCount(self):
        return len(self._effect_names)

    # -- undo/redo with the real vtkSegmentationHistory
    def _set_maximumNumberOfUndoStates(self, n):
        self._props["maximumNumberOfUndoStates"] = int(n)
        self._history.SetMaximumNumberOfStates(int(n))

    def setMaximumNumberOfUndoStates(self, n):
        self._set_maximumNumberOfUndoStates(n)

    def setUndoEnabled(self, flag):
        self._props["undoEnabled"] = bool(flag)

    def saveStateForUndo(self):
        if self._props["undoEnabled"] and self._history.GetSegmentation() is not None:
            self._history.SaveState()

    def undo(self):
        if self.segmentationNode() is None:
            return
        self._history.RestorePreviousState()

    def redo(self):
        if self.segmentationNode() is None:
            return
        self._history.RestoreNextState()

    # -- shortcuts / views
    def installKeyboardShortcuts(self, parent=None):
        object.__setattr__(self, "_shortcuts_installed", True)

    def uninstallKeyboardShortcuts(self):
        object.__setattr__(self, "_shortcuts_installed", False)

    def setupViewObservations(self):
        object.__setattr__(self, "_view_observations", True)

    def removeViewObservations(self):
        object.__setattr__(self, "_view_observations", False)

    def setMRMLScene(self, scene):
        if scene is not self.mrmlScene():
            self._history.RemoveAllStates()
        super().setMRMLScene(scene)


class qSlicerMarkupsPlaceWidget(qSlicerWidget):
    """Slicer's markups place widget, kept (like the C++ widget) in the scene's REAL interaction and selection nodes:
    place mode is the interaction node in Place mode with the widget's node as the selection node's active place
    node; ``placeMultipleMarkups`` decides the persistence when place mode is switched on (ForcePlaceMultipleMarkups:
    on, ForcePlaceSingleMarkup: off, otherwise as the interaction node has it).  Clicks in the views are
    ``markups.place_point`` (the C++ markups widgets, not a Qt widget)."""

    _is_standin = True
    _api_source = ("header", "qSlicerMarkupsPlaceWidget")
    _prop_defaults = {"enabled": True, "buttonsVisible": True, "placeMultipleMarkups": 0,
                      "deleteAllControlPointsOptionVisible": True, "unsetLastControlPointOptionVisible": True,
                      "unsetAllControlPointsOptionVisible": True}

    def setCurrentNode(self, node):
        if node is not None and not node.IsA("vtkMRMLMarkupsNode"):
            node = None                                   # the C++ slot takes vtkMRMLNode* and downcasts
        if node is None and self._get_placeModeEnabled():
            self.setPlaceModeEnabled(False)
        object.__setattr__(self, "_current", node)

    def currentNode(self):
        return getattr(self, "_current", None)

    def currentMarkupsNode(self):
        return self.currentNode()

    def currentMarkupsFiducialNode(self):
        node = self.currentNode()
        return node if node is not None and node.IsA("vtkMRMLMarkupsFiducialNode") else None

    def interactionNode(self):
        scene = self.mrmlScene()
        return scene.GetNodeByID("vtkMRMLInteractionNodeSingleton") if scene is not None else None

    def selectionNode(self):
        scene = self.mrmlScene()
        return scene.GetNodeByID("vtkMRMLSelectionNodeSingleton") if scene is not None else None

    def _get_currentNodeActive(self):
        node, selection = self.currentNode(), self.selectionNode()
        return node is not None and selection is not None and selection.GetActivePlaceNodeID() == node.GetID()

    def setCurrentNodeActive(self, active):
        node, selection = self.currentNode(), self.selectionNode()
        if node is None or selection is None:
            return
        if active:
            selection.SetReferenceActivePlaceNodeClassName(node.GetClassName())
            selection.SetActivePlaceNodeID(node.GetID())
        elif self._get_currentNodeActive():
            selection.SetActivePlaceNodeID(None)

    def _get_placeModeEnabled(self):
        interaction = self.interactionNode()
        return bool(self._get_currentNodeActive() and interaction is not None
                    and interaction.GetCurrentInteractionMode() == interaction.Place)

    def setPlaceModeEnabled(self, enable):
        interaction = self.interactionNode()
        if interaction is None or self.currentNode() is None:
            return
        if enable:
            self.setCurrentNodeActive(True)
            option = self._props["placeMultipleMarkups"]
            if option == self._api().enums["ForcePlaceMultipleMarkups"]:
                interaction.SetPlaceModePersistence(1)
            elif option == self._api().enums["ForcePlaceSingleMarkup"]:
                interaction.SetPlaceModePersistence(0)
            interaction.SetCurrentInteractionMode(interaction.Place)
        elif self._get_placeModeEnabled():
            interaction.SetCurrentInteractionMode(interaction.ViewTransform)
        self._emit("activeMarkupsPlaceModeChanged", self._get_placeModeEnabled())

    def _get_placeModePersistency(self):
        interaction = self.interactionNode()
        return bool(interaction is not None and interaction.GetPlaceModePersistence())

    def setPlaceModePersistency(self, persistent):
        interaction = self.interactionNode()
        if interaction is not None:
            interaction.SetPlaceModePersistence(1 if persistent else 0)

    def deleteLastPoint(self):
        node = self.currentNode()
        if node is not None and node.GetNumberOfControlPoints():
            node.RemoveNthControlPoint(node.GetNumberOfControlPoints() - 1)

    def deleteAllPoints(self):
        node = self.currentNode()
        if node is not None:
            node.RemoveAllControlPoints()
