"""The module's path fields (Checkpoint, Propagation model, Correction model) through the REAL parameterNodeWrapper
connector and a ctkPathLineEdit stand-in that signals as CTK's does (currentPathChanged only for a text its
nameFilters validator accepts; clearing emits nothing): review findings W2 (a cleared field never reached the
parameter, so "empty = registration only" kept using the cleared model) and K1 (an unset path showed ".").

Unchecked here: real keyboard editing in Qt (``type_path`` emits textEdited then textChanged, as QLineEdit does
for a user's edit) and the file dialog of the "..." button (the tests set ``currentPath`` as its result does).
"""

from pathlib import Path

import pytest

from test_slicer_module_conformance import (MODULE, RUN_S, load_ct, pythonslicer, session,  # noqa: F401
                                            small_ct)
from slicer_conformance.ctkwidgets import type_path

FIELDS = {"modelPathLineEdit": ("modelPath", "gtv.safetensors"),
          "propagationModelPathLineEdit": ("propagationModelPath", "propagation.safetensors"),
          "correctionModelPathLineEdit": ("correctionModelPath", "click.zip")}


def test_a_fresh_module_shows_empty_path_fields_for_unset_paths(session):
    widget = session.show_module("DiffUMambaSeg")
    parameters = widget.logic.getParameterNode()
    for field, (name, _file) in FIELDS.items():
        assert getattr(parameters, name) == Path()
        assert getattr(widget.ui, field).currentPath == "", field          # was "." (str(Path()))
    parameters.propagationModelPath = Path("/models/propagation.safetensors")   # parameter -> field, and back unset
    assert widget.ui.propagationModelPathLineEdit.currentPath == "/models/propagation.safetensors"
    parameters.propagationModelPath = Path()
    assert widget.ui.propagationModelPathLineEdit.currentPath == ""
    assert not session.slot_errors, session.slot_errors


@pytest.mark.parametrize("field", list(FIELDS))
def test_clearing_a_path_field_unsets_its_parameter(session, tmp_path, field):
    widget = session.show_module("DiffUMambaSeg")
    name, file_name = FIELDS[field]
    if field == "modelPathLineEdit":                  # enabled with "Checkpoint or zip (choose below)"
        widget.ui.modelComboBox.currentIndex = widget.ui.modelComboBox.count - 1
    if field == "correctionModelPathLineEdit":
        widget.ui.correctionModelComboBox.currentIndex = widget.ui.correctionModelComboBox.count - 1
    edit, parameters = getattr(widget.ui, field), widget.logic.getParameterNode()
    assert edit.enabled
    model = tmp_path / file_name
    edit.currentPath = str(model)                     # what the "..." file dialog does
    assert getattr(parameters, name) == model
    type_path(edit, "")                               # the user selects the path and deletes it
    assert getattr(parameters, name) == Path() and edit.currentPath == ""
    edit.currentPath = str(model)
    edit.currentPath = ""                             # cleared from code: the same
    assert getattr(parameters, name) == Path() and edit.currentPath == ""
    type_path(edit, ".")                              # a user's "." (e.g. starting ../x.zip) is left as typed
    assert edit.currentPath == "." and getattr(parameters, name) == Path()
    assert not session.slot_errors, session.slot_errors


def test_a_cleared_propagation_model_propagates_by_registration_only(session, small_ct, tmp_path):
    import sys

    sys.path.insert(0, str(MODULE))
    from DiffUMambaSegLib import scene as scene_io

    widget = session.show_module("DiffUMambaSeg")
    ui, parameters = widget.ui, widget.logic.getParameterNode()
    prior, current = load_ct(session, small_ct[0], "prior"), load_ct(session, small_ct[0], "current")
    ui.priorVolumeSelector.setCurrentNode(prior)
    ui.priorSegmentationSelector.setCurrentNode(scene_io.import_gtv(session.scene, small_ct[1], prior, "prior GTV"))
    ui.currentVolumeSelector.setCurrentNode(current)
    model = tmp_path / "propagation.safetensors"
    model.write_bytes(b"a model the user then decided against")
    ui.propagationModelPathLineEdit.currentPath = str(model)
    assert parameters.propagationModelPath == model
    type_path(ui.propagationModelPathLineEdit, "")    # tooltip: "empty = registration only"
    ui.propagateButton.click()
    assert widget.logic.job is not None, session.dialogs
    command = widget.logic.job.command               # what runs: diffumamba propagate, and no model
    assert command[command.index("-m") + 2] == "propagate"
    assert "--model" not in command and str(model) not in command, command
    assert parameters.propagationModelPath == Path()
    session.run_until(lambda: ui.propagateButton.text == "Propagate", RUN_S)
    assert not session.slot_errors, session.slot_errors
    assert "Dice registered prior vs result" in ui.propagationReportLabel.text
    assert ui.propagationModelPathLineEdit.currentPath == "" and parameters.propagationModelPath == Path()
