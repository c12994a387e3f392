"""The module's path fields (``ctkPathLineEdit`` bound to ``Path`` parameters by ``connectGui``) made clearable
and shown empty when unset.

Why, clearing: CTK's ctkPathLineEdit emits ``currentPathChanged`` only for a text its validator accepts
(``updateHasValidInput()``, Libs/Widgets/ctkPathLineEdit.cpp:730-746, CTK 5056664a); the validator comes from
``nameFilters`` (``(.*\\.safetensors?$|.*\\.zip?$)``, or ``.+`` without filters, Libs/Core/ctkUtils.cpp:153-192), and
an empty text is never acceptable. The parameterNodeWrapper's connector listens to ``currentPathChanged`` only
(slicer/parameterNodeWrapper/guiConnectors.py:673-706), so a cleared field would leave the old path in the
parameter: "Propagation model: empty = registration only" would still use the cleared model. Here the field's
line edit (``comboBox().lineEdit()``, whose textChanged drives CTK's own check) writes ``Path()`` when its text
is empty.

Why, empty display: an unset ``Path`` parameter is ``Path()`` (the serializer's default,
serializers.py:331-332) and the connector writes ``str(value)`` into the field, i.e. ``"."``. A "." that did not
come from the user's typing (QLineEdit emits textEdited, then textChanged, only for the user's edits) is shown
as an empty field; it reads back as the same ``Path()``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Optional

__all__ = ["PARAMETER_PROPERTY", "UNSET_TEXT", "connectPathFields"]

PARAMETER_PROPERTY = "SlicerParameterName"   # the .ui property connectGui binds a widget by
UNSET_TEXT = str(Path())                      # what the connector writes for an unset Path: "."


class _PathField:
    def __init__(self, field, parameters: Callable[[], Optional[object]]):
        self.field, self.parameters = field, parameters
        self.name = field.property(PARAMETER_PROPERTY)
        self.edited: Optional[str] = None       # the text of the user's last edit, until its textChanged
        edit = field.comboBox().lineEdit()
        edit.textEdited.connect(self.onTextEdited)
        edit.textChanged.connect(self.onTextChanged)

    def onTextEdited(self, text: str) -> None:
        self.edited = text

    def onTextChanged(self, text: str) -> None:
        byUser, self.edited = self.edited == text, None
        if text == UNSET_TEXT and not byUser:
            self.field.currentPath = ""            # textChanged("") again: the parameter already is Path()
            return
        if text.strip():
            return
        parameters = self.parameters()
        if parameters is not None and getattr(parameters, self.name) != Path():
            setattr(parameters, self.name, Path())


def connectPathFields(fields: Iterable, parameters: Callable[[], Optional[object]]) -> list:
    """Wire each ``ctkPathLineEdit`` in ``fields`` that has a ``SlicerParameterName``; ``parameters`` returns the
    parameter node the GUI is connected to (None while there is none). Once per widget, for its lifetime (the
    connections go with the widgets). Call it before ``connectGui`` so the first "." is already shown empty."""
    return [_PathField(field, parameters) for field in fields if field.property(PARAMETER_PROPERTY)]
