"""Proves the slicer_conformance harness is real (reference Slicer code runs) and strict."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from slicer_conformance import SlicerSession, reference_dir  # noqa: E402

pytestmark = pytest.mark.skipif(not (reference_dir() / "slicer" / "util.py").is_file(),
                                reason="Slicer 5.12 reference folder not found")

UI = """<?xml version="1.0" encoding="UTF-8"?>
<ui version="4.0">
 <class>Tiny</class>
 <widget class="qMRMLWidget" name="Tiny">
  <layout class="QVBoxLayout" name="verticalLayout">
   <item>
    <widget class="qMRMLNodeComboBox" name="inputSelector">
     <property name="nodeTypes"><stringlist><string>vtkMRMLScalarVolumeNode</string></stringlist></property>
     <property name="noneEnabled"><bool>true</bool></property>
     <property name="SlicerParameterName" stdset="0"><string>inputVolume</string></property>
    </widget>
   </item>
   <item>
    <widget class="ctkPathLineEdit" name="outputPath">
     <property name="filters"><set>ctkPathLineEdit::Dirs</set></property>
     <property name="SlicerParameterName" stdset="0"><string>%(path_param)s</string></property>
    </widget>
   </item>
   <item>
    <widget class="QComboBox" name="modeCombo">
     <property name="SlicerParameterName" stdset="0"><string>mode</string></property>
    </widget>
   </item>
   <item><widget class="QPushButton" name="applyButton"><property name="text"><string>Apply</string></property></widget></item>
   <item><widget class="qMRMLSegmentEditorWidget" name="editor"/></item>
   <item><spacer name="spacer"/></item>
  </layout>
 </widget>
 <connections>
  <connection><sender>Tiny</sender><signal>mrmlSceneChanged(vtkMRMLScene*)</signal>
   <receiver>inputSelector</receiver><slot>setMRMLScene(vtkMRMLScene*)</slot></connection>
 </connections>
</ui>
"""

MODULE = '''
import pathlib
from typing import Annotated
import qt, ctk, slicer, vtk
from slicer.ScriptedLoadableModule import *
from slicer.util import VTKObservationMixin
from slicer.parameterNodeWrapper import parameterNodeWrapper, Choice

CALLS = []

class Tiny(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "Tiny"
        self.parent.categories = ["Test"]
        slicer.app.connect("startupCompleted()", lambda: CALLS.append("startupCompleted"))

@parameterNodeWrapper
class TinyParameterNode:
    inputVolume: slicer.vtkMRMLScalarVolumeNode
    outputPath: %(path_type)s
    mode: Annotated[str, Choice(["fast", "slow"])] = "fast"

class TinyWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self._guiTag = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/Tiny.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.editorNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
        self.ui.editor.setMRMLScene(slicer.mrmlScene)
        self.ui.editor.setMRMLSegmentEditorNode(self.editorNode)
        self.ui.applyButton.connect("clicked(bool)", self.onApply)
        self.logic = TinyLogic()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self._parameterNode = self.logic.getParameterNode()
        self._guiTag = self._parameterNode.connectGui(self.ui)

    def onApply(self):
        CALLS.append(("apply", self._parameterNode.mode))

    def enter(self):
        CALLS.append("enter")
        self.ui.editor.installKeyboardShortcuts()

    def exit(self):
        CALLS.append("exit")
        self.ui.editor.uninstallKeyboardShortcuts()

    def onSceneEndClose(self, caller, event):
        CALLS.append("endClose")

    def cleanup(self):
        CALLS.append("cleanup")
        self.removeObservers()
        if self._guiTag is not None:
            self._parameterNode.disconnectGui(self._guiTag)

class TinyLogic(ScriptedLoadableModuleLogic):
    def getParameterNode(self):
        return TinyParameterNode(super().getParameterNode())
'''


def write_module(root, path_type="pathlib.Path", path_param="outputPath"):
    (root / "Resources" / "UI").mkdir(parents=True, exist_ok=True)
    (root / "Resources" / "UI" / "Tiny.ui").write_text(UI % {"path_param": path_param})
    (root / "Tiny.py").write_text(MODULE % {"path_type": path_type})
    return root


@pytest.fixture
def tiny(tmp_path):
    return write_module(tmp_path / "Tiny")


def test_load_show_connectgui_roundtrip_and_strictness(tiny, tmp_path):
    with SlicerSession(module_dir=tiny, work=tmp_path / "work", testing=True) as session:
        import slicer
        import slicer.parameterNodeWrapper
        assert Path(slicer.util.__file__).resolve().is_relative_to(reference_dir())
        assert Path(slicer.parameterNodeWrapper.__file__).resolve().is_relative_to(reference_dir())
        session.load_module("Tiny")
        mod = sys.modules["Tiny"]
        assert "startupCompleted" in mod.CALLS
        assert slicer.modules.tiny.title == "Tiny"
        w = session.show_module("Tiny")
        assert slicer.modules.TinyWidget is w and mod.CALLS[-1] == "enter"
        assert w.ui.editor._shortcuts_installed
        pn = w._parameterNode

        # widget -> parameter node
        vol = session.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "vol")
        w.ui.inputSelector.setCurrentNode(vol)
        assert pn.inputVolume is vol
        w.ui.outputPath.currentPath = str(tmp_path / "out")
        assert pn.outputPath == tmp_path / "out"
        assert [w.ui.modeCombo.itemText(i) for i in range(w.ui.modeCombo.count)] == ["fast", "slow"]
        w.ui.modeCombo.currentIndex = 1
        assert pn.mode == "slow"
        # parameter node -> widget
        pn.mode = "fast"
        assert w.ui.modeCombo.currentText == "fast"
        pn.outputPath = tmp_path / "other"
        assert w.ui.outputPath.currentPath == str(tmp_path / "other")
        pn.inputVolume = None
        assert w.ui.inputSelector.currentNode() is None
        pn.inputVolume = vol
        session.scene.RemoveNode(vol)
        assert w.ui.inputSelector.currentNode() is None and pn.inputVolume is None

        # button click calls the handler
        w.ui.applyButton.click()
        assert mod.CALLS[-1] == ("apply", "fast")

        # strictness
        with pytest.raises(AttributeError, match="setTextt"):
            w.ui.applyButton.setTextt("x")
        with pytest.raises(AttributeError, match="saveStateForUndoo"):
            w.ui.editor.saveStateForUndoo()
        with pytest.raises(AttributeError, match="setNodeTypes"):  # public C++ setter, not a slot/Q_INVOKABLE
            w.ui.inputSelector.setNodeTypes(["vtkMRMLModelNode"])
        with pytest.raises(AttributeError):
            w.ui.outputPath.currentPathh = "x"
        with pytest.raises(AttributeError):
            import qt
            qt.QPushButton.NoSuchEnum
        assert w.ui.applyButton.text == "Apply"

        session.leave_module()
        assert mod.CALLS[-1] == "exit" and not w.ui.editor._shortcuts_installed


def test_str_parameter_on_path_line_edit_is_rejected_by_reference_connectors(tmp_path):
    root = write_module(tmp_path / "Tiny", path_type="str")
    with SlicerSession(module_dir=root, work=tmp_path / "work") as session:
        session.load_module("Tiny")
        with pytest.raises(RuntimeError, match="Unable to create GUI connector"):
            session.show_module("Tiny")


def test_segment_editor_undo_uses_real_history(tiny, tmp_path):
    import numpy as np
    with SlicerSession(module_dir=tiny, work=tmp_path / "work") as session:
        import slicer
        session.load_module("Tiny")
        w = session.show_module("Tiny")
        vol = slicer.util.addVolumeFromArray(np.zeros((4, 5, 6), dtype=np.int16))
        seg = session.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        seg.SetReferenceImageGeometryParameterFromVolumeNode(vol)
        sid = seg.GetSegmentation().AddEmptySegment("s")
        mask = np.zeros((4, 5, 6), dtype=np.uint8)
        mask[1:3, 1:3, 1:3] = 1
        slicer.util.updateSegmentBinaryLabelmapFromArray(mask, seg, sid, vol)
        editor = w.ui.editor
        editor.setSegmentationNode(seg)
        editor.setSourceVolumeNode(vol)
        assert w.editorNode.GetSegmentationNode() is seg and editor.sourceVolumeNodeID() == vol.GetID()
        editor.saveStateForUndo()
        slicer.util.updateSegmentBinaryLabelmapFromArray(np.zeros_like(mask), seg, sid, vol)
        assert slicer.util.arrayFromSegmentBinaryLabelmap(seg, sid, vol).sum() == 0
        editor.undo()
        assert slicer.util.arrayFromSegmentBinaryLabelmap(seg, sid, vol).sum() == mask.sum()


def test_close_scene_reload_cleanup_settings_dialogs_timers(tiny, tmp_path):
    work = tmp_path / "work"
    with SlicerSession(module_dir=tiny, work=work, testing=False) as session:
        import qt
        import slicer
        session.load_module("Tiny")
        old = session.show_module("Tiny")
        mod = sys.modules["Tiny"]
        session.close_scene()
        assert session.scene_events[-2:] == ["StartCloseEvent", "EndCloseEvent"] and "endClose" in mod.CALLS
        new = session.reload_module("Tiny")
        assert new is not old and "cleanup" in mod.CALLS and slicer.modules.TinyWidget is new
        assert sys.modules["Tiny"].CALLS[-1] == "enter"
        qt.QSettings().setValue("Tiny/flag", True)
        assert qt.QSettings().value("Tiny/flag") is True
        # dialogs: reference util in non-testing mode reaches the stand-in message boxes
        slicer.util.errorDisplay("boom")
        session.answer(False)
        assert slicer.util.confirmOkCancelDisplay("sure?") is False
        with pytest.raises(RuntimeError, match="queued no answer"):
            slicer.util.confirmYesNoDisplay("again?")
        assert [(d["kind"], d["text"]) for d in session.dialogs] == [
            ("error", "boom"), ("question", "sure?"), ("question", "again?")]
        # timers fire only when events are processed
        fired = []
        timer = qt.QTimer()
        timer.singleShot = True
        timer.interval = 20
        timer.timeout.connect(lambda: fired.append(1))
        timer.start()
        assert not fired
        session.run_until(lambda: fired, timeout_s=5)
        assert not timer.isActive()
    with SlicerSession(module_dir=tiny, work=work) as session:
        import qt
        assert qt.QSettings().value("Tiny/flag") == "true"  # what Qt's INI backend returns after a restart
        assert qt.QStandardPaths.writableLocation(qt.QStandardPaths.DocumentsLocation).startswith(str(work))
    import slicer
    assert not hasattr(slicer, "app") and "slicer.util" not in sys.modules or \
        not Path(sys.modules["slicer.util"].__file__).resolve().is_relative_to(reference_dir())
    assert "qt" not in sys.modules and "Tiny" not in sys.modules


def test_markups_place_widget_and_a_click_in_a_view_use_the_real_interaction_node(tiny, tmp_path):
    """The place widget switches the real interaction / selection nodes into (persistent) place mode for its point
    list, a click then defines a point there (PointPositionDefinedEvent after a preview point), a single-point place
    mode ends after one click, and a click outside place mode places nothing."""
    with SlicerSession(module_dir=tiny, work=tmp_path / "work") as session:
        import slicer
        widget = slicer.qSlicerMarkupsPlaceWidget()
        widget.setMRMLScene(session.scene)
        points = session.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "points")
        widget.setCurrentNode(points)
        with pytest.raises(RuntimeError, match="not in place mode"):
            session.place_point([1.0, 2.0, 3.0])
        modes = []
        widget.activeMarkupsPlaceModeChanged.connect(modes.append)
        widget.placeMultipleMarkups = slicer.qSlicerMarkupsPlaceWidget.ForcePlaceMultipleMarkups
        widget.setPlaceModeEnabled(True)
        interaction = session.scene.GetNodeByID("vtkMRMLInteractionNodeSingleton")
        selection = session.scene.GetNodeByID("vtkMRMLSelectionNodeSingleton")
        assert modes == [True] and widget.placeModeEnabled and widget.placeModePersistency
        assert interaction.GetCurrentInteractionMode() == interaction.Place
        assert selection.GetActivePlaceNodeID() == points.GetID()
        events = []
        points.AddObserver(points.PointPositionDefinedEvent, lambda caller, event: events.append(
            [caller.GetNthControlPointPositionStatus(i) for i in range(caller.GetNumberOfControlPoints())]))
        session.place_point([1.0, 2.0, 3.0])
        session.place_point([4.0, 5.0, 6.0])
        position = [0.0, 0.0, 0.0]
        points.GetNthControlPointPositionWorld(1, position)
        assert points.GetNumberOfControlPoints() == 2 and position == [4.0, 5.0, 6.0]
        assert events[-1] == [points.PositionDefined] * 2 and widget.placeModeEnabled
        widget.placeMultipleMarkups = slicer.qSlicerMarkupsPlaceWidget.ForcePlaceSingleMarkup
        widget.setPlaceModeEnabled(True)
        session.place_point([7.0, 8.0, 9.0])
        assert not widget.placeModeEnabled and interaction.GetCurrentInteractionMode() == interaction.ViewTransform
        with pytest.raises(RuntimeError, match="not in place mode"):
            session.place_point([7.0, 8.0, 9.0])
        widget.deleteLastPoint()
        assert points.GetNumberOfControlPoints() == 2
        with pytest.raises(AttributeError, match="placePoint"):
            widget.placePoint([1, 2, 3])


def test_path_line_edit_signals_only_acceptable_paths_as_ctk_does(tiny, tmp_path):
    """ctkPathLineEdit (CTK 5056664a ctkPathLineEdit.cpp:730-746, ctkUtils.cpp:153-192): the validator pattern
    from nameFilters; currentPathChanged only for an acceptable text; validInputChanged on each change of
    acceptability; the real connector therefore never sees a cleared field."""
    from slicer_conformance.ctkwidgets import name_filters_to_pattern, type_path

    assert name_filters_to_pattern(["Checkpoints (*.safetensors *.zip)"]) == r"(.*\.safetensors?$|.*\.zip?$)"
    assert name_filters_to_pattern(["Images (*.jpg)", "Text (*.txt)"]) == r"(.*\.jpg?$|.*\.txt?$)"  # ctkUtilsTest3
    assert name_filters_to_pattern([]) == ".+"
    with SlicerSession(module_dir=tiny, work=tmp_path / "work", testing=True) as session:
        import ctk

        session.load_module("Tiny")
        w = session.show_module("Tiny")
        edit, pn = w.ui.outputPath, w._parameterNode
        assert edit.currentPath == "." and pn.outputPath == Path()        # the connector writes str(Path())
        seen = []
        edit.currentPathChanged.connect(lambda path: seen.append(("path", path)))
        edit.validInputChanged.connect(lambda valid: seen.append(("valid", valid)))
        edit.currentPath = str(tmp_path / "out")                           # no filters: ".+"
        assert seen == [("path", str(tmp_path / "out"))] and pn.outputPath == tmp_path / "out"   # valid since "."
        edit.currentPath = ""                                             # Intermediate: nothing reaches the node
        assert seen[1:] == [("valid", False)] and edit.currentPath == "" and pn.outputPath == tmp_path / "out"
        type_path(edit, "")                                                # no change of text, no signal
        type_path(edit, str(tmp_path / "typed"))
        assert seen[2:] == [("path", str(tmp_path / "typed")), ("valid", True)] and pn.outputPath == tmp_path / "typed"

        field = ctk.ctkPathLineEdit()
        field.nameFilters = ["Checkpoints (*.safetensors *.zip)"]
        signals = []
        field.currentPathChanged.connect(lambda path: signals.append(path))
        field.comboBox().lineEdit().textChanged.connect(lambda text: signals.append(("text", text)))
        field.currentPath = "/models/notes.txt"                           # not the filter's extension
        assert field.currentPath == "/models/notes.txt" and signals == [("text", "/models/notes.txt")]
        assert not field.comboBox().lineEdit().hasAcceptableInput()
        field.currentPath = "/models/gtv.safetensors"
        assert signals[1:] == ["/models/gtv.safetensors", ("text", "/models/gtv.safetensors")]
        assert field.comboBox().lineEdit().acceptableInput and field.comboBox().className() == "QComboBox"
        with pytest.raises(NotImplementedError):
            field.showHistoryButton = False


def test_effect_factory_and_the_editor_effect_list(tiny, tmp_path):
    """qSlicerSegmentEditorEffectFactory.instance() (one per application), registerEffect's refusals and
    effectRegistered(QString); a qMRMLSegmentEditorWidget copies the factory's effects when built and on
    updateEffectList() only."""
    with SlicerSession(module_dir=tiny, work=tmp_path / "work", testing=True) as session:
        import slicer

        session.load_module("Tiny")
        editor = session.show_module("Tiny").ui.editor
        factory = slicer.qSlicerSegmentEditorEffectFactory.instance()
        assert factory is slicer.qSlicerSegmentEditorEffectFactory.instance()
        assert "Threshold" in editor.availableEffectNames() and editor._effect_list_updates[-1][0] == "Paint"
        heard = []
        factory.connect("effectRegistered(QString)", heard.append)
        effect = slicer.qSlicerSegmentEditorScriptedEffect(None)
        effect.name = "Local threshold"
        assert factory.registerEffect(effect) and heard == ["Local threshold"]
        duplicate = slicer.qSlicerSegmentEditorScriptedEffect(None)
        unnamed = slicer.qSlicerSegmentEditorScriptedEffect(None)
        duplicate.name = "Local threshold"
        assert not factory.registerEffect(duplicate) and not factory.registerEffect(unnamed) and len(heard) == 1
        with pytest.raises(TypeError):
            factory.registerEffect("Local threshold")
        assert "Local threshold" not in editor.availableEffectNames()      # registered after the widget was built
        with pytest.raises(NotImplementedError):
            editor.setActiveEffectByName("Local threshold")
        editor.updateEffectList()
        assert editor.availableEffectNames()[-1] == "Local threshold" and editor._effect_list_updates[-1] == [
            "Local threshold"]
        editor.setActiveEffectByName("Local threshold")
        assert editor.activeEffect() == "Local threshold"
    with SlicerSession(module_dir=tiny, work=tmp_path / "work2", testing=True):
        import slicer

        assert "Local threshold" not in [e.name for e in slicer.qSlicerSegmentEditorEffectFactory.instance()
                                         .registeredEffects()]                 # a new application
