"""The module's embedded Segment Editor keeps the core Segment Editor module's bookkeeping (review finding C3,
reference Modules/Scripted/SegmentEditor/SegmentEditor.py:68-79, 149-153): effects registered with
``qSlicerSegmentEditorEffectFactory`` after the module's setup (SegmentEditorExtraEffects registers at
startupCompleted, so when DiffUMambaSeg is the startup module they come later) reach its editor through
``updateEffectList()``; after a scene import (an .mrb loaded into the scene) the editor is on the scene's
singleton editor node.

Unchecked here: the effects' buttons and tools themselves (C++/Qt; the stand-in keeps the effect list by name).
"""

from test_slicer_module_conformance import MODULE, pythonslicer, session  # noqa: F401

SINGLETON = ("SegmentEditor", "vtkMRMLSegmentEditorNode")


def register(name):
    import slicer

    effect = slicer.qSlicerSegmentEditorScriptedEffect(None)
    effect.name = name                       # what a scripted effect's __init__ does
    return slicer.qSlicerSegmentEditorEffectFactory.instance().registerEffect(effect)


def test_an_effect_registered_after_setup_reaches_the_embedded_editor(session):
    import slicer

    widget = session.show_module("DiffUMambaSeg")
    editor = widget.ui.segmentEditorWidget
    assert "Threshold" in editor.availableEffectNames() and "Local threshold" not in editor.availableEffectNames()
    assert register("Local threshold")
    assert editor.availableEffectNames()[-1] == "Local threshold"
    editor.setActiveEffectByName("Local threshold")
    session.leave_module()
    assert editor.activeEffect() is None
    reloaded = session.reload_module("DiffUMambaSeg")      # the old widget lets go of the application's factory
    factory = slicer.qSlicerSegmentEditorEffectFactory.instance()
    assert len(factory.effectRegistered.connected("effectRegistered(QString)")) == 1
    assert register("Surface cut")
    assert "Surface cut" in reloaded.ui.segmentEditorWidget.availableEffectNames()
    assert not session.slot_errors, session.slot_errors


def save_scene_with_a_segmentation(session, path):
    """A scene (as in an .mrb) whose Segment Editor shows the segmentation "saved GTV"."""
    scene = session.scene
    editor_node = scene.GetSingletonNode(*SINGLETON)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "saved GTV")
    editor_node.SetAndObserveSegmentationNode(segmentation)
    scene.SetURL(str(path))
    assert scene.Commit()
    editor_node.SetAndObserveSegmentationNode(None)
    scene.RemoveNode(segmentation)


def test_a_scene_import_leaves_the_editor_on_the_singleton_node(session, tmp_path):
    widget = session.show_module("DiffUMambaSeg")
    editor, scene = widget.ui.segmentEditorWidget, session.scene
    save_scene_with_a_segmentation(session, tmp_path / "saved.mrml")

    scene.SetURL(str(tmp_path / "saved.mrml"))            # the editor node is there: the import copies into it
    assert scene.Import()
    assert editor.mrmlSegmentEditorNode() is scene.GetSingletonNode(*SINGLETON)
    assert editor.segmentationNode().GetName() == "saved GTV"

    scene.RemoveNode(scene.GetSingletonNode(*SINGLETON))   # no editor node: the import brings a new one
    scene.SetURL(str(tmp_path / "saved.mrml"))
    assert scene.Import() and session.scene_events[-2:] == ["StartImportEvent", "EndImportEvent"]
    singleton = scene.GetSingletonNode(*SINGLETON)
    assert editor.mrmlSegmentEditorNode() is singleton and widget.editor.node is singleton
    assert editor.segmentationNode() is not None and editor.segmentationNode().GetName() == "saved GTV"
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentEditorNode") == 1
    assert not session.slot_errors, session.slot_errors


def test_an_import_while_the_module_is_hidden_is_picked_up_when_it_is_shown(session, tmp_path):
    widget = session.show_module("DiffUMambaSeg")
    editor, scene = widget.ui.segmentEditorWidget, session.scene
    save_scene_with_a_segmentation(session, tmp_path / "saved.mrml")
    session.leave_module()
    scene.RemoveNode(scene.GetSingletonNode(*SINGLETON))
    scene.SetURL(str(tmp_path / "saved.mrml"))
    assert scene.Import()
    assert editor.mrmlSegmentEditorNode() is not scene.GetSingletonNode(*SINGLETON)    # as the core module: later
    session.show_module("DiffUMambaSeg")
    assert editor.mrmlSegmentEditorNode() is scene.GetSingletonNode(*SINGLETON)
    assert editor.segmentationNode().GetName() == "saved GTV"
