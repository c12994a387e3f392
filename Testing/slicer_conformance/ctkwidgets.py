"""Behaviour of the CTK widget stand-ins (module ``ctk`` inside a session), on the Qt ones of :mod:`widgets`.

Why: the module's path fields, folder button and collapsible sections bind to parameters through the real GUI
connectors, which check these exact classes; names are checked against the CTK headers by :mod:`strict`.
"""

from __future__ import annotations

import re

from .widgets import QAbstractButton, QCheckBox, QComboBox, QLineEdit, QWidget


# ============================================================================ CTK widgets
class ctkCollapsibleButton(QAbstractButton):
    _is_standin = True
    _api_source = ("header", "ctkCollapsibleButton")
    _prop_defaults = {"enabled": True, "checkable": True, "checked": True, "collapsedHeight": 14}

    def _set_collapsed(self, value):
        value = bool(value)
        if value == self._props["collapsed"]:
            return
        self._props["collapsed"] = value
        self._props["checked"] = not value
        self._emit("toggled", not value)
        self._emit("contentsCollapsed", value)

    def _set_checked(self, value):
        self._set_collapsed(not value)


# ctk::nameFilterToExtensions / extensionToRegExp / nameFiltersToRegularExpression (CTK 5056664a,
# Libs/Core/ctkUtils.cpp:153-192): "Checkpoints (*.safetensors *.zip)" -> "(.*\\.safetensors?$|.*\\.zip?$)", no
# usable filter -> ".+".
_NAME_FILTER = re.compile(r"^(.*)\(([a-zA-Z0-9_.*? +;#\-\[\]@\{\}/!<>\$%&=^~:\|]*)\)$")
_VALID_WILDCARD = re.compile(r"^[\w\s\.\*\_\~\$\[\]]+$")
_EXTENSION = re.compile(r"\*\.(\w+)")


def name_filters_to_pattern(name_filters) -> str:
    """The validator pattern ctkPathLineEdit sets from its ``nameFilters`` (``updateFilter()``)."""
    parts = []
    for name_filter in name_filters or []:
        match = _NAME_FILTER.search(name_filter)
        if match:
            extensions = match.group(2).split(" ")
        else:
            extensions = [name_filter] if _VALID_WILDCARD.search(name_filter) else []
        for extension in (e for e in extensions if e):
            found = _EXTENSION.search(extension)
            if found:
                parts.append(f".*\\.{found.group(1)}?$")
    return f"({'|'.join(parts)})" if parts else ".+"


class _PathLineEditText(QLineEdit):
    """The QLineEdit inside ctkPathLineEdit, with its QRegularExpressionValidator: ``hasAcceptableInput()`` is a
    whole-text match (QRegularExpressionValidator anchors the pattern), an empty text is never acceptable.
    Typing is never refused for CTK's patterns (``.*\\.ext?$`` and ``.+`` can always be completed: Intermediate),
    so a user's edit is :func:`type_path` (textEdited, then textChanged, as QWidgetLineControl::finishChange)."""

    _is_standin = True
    _api_source = ("qt", "QLineEdit")

    def className(self):
        return "QLineEdit"

    def hasAcceptableInput(self):
        return re.fullmatch(getattr(self, "_pattern", ".+"), self._props["text"]) is not None

    def _get_acceptableInput(self):
        return self.hasAcceptableInput()


class _PathComboBox(QComboBox):
    """ctkPathLineEdit's history combo box: editable, NoInsert, its line edit is the path text
    (ctkPathLineEdit.cpp createPathLineEditWidget(true), the default: showHistoryButton is true)."""

    _is_standin = True
    _api_source = ("qt", "QComboBox")
    _prop_defaults = {**QComboBox._prop_defaults, "editable": True}

    def __init__(self, *args):
        super().__init__(*args)
        object.__setattr__(self, "_line_edit", _PathLineEditText(self))

    def className(self):
        return "QComboBox"

    def lineEdit(self):
        return self._line_edit

    def _set_currentIndex(self, index):
        super()._set_currentIndex(index)
        if self._props["currentIndex"] >= 0:              # an editable combo box shows the current item's text
            self._line_edit.setText(self._get_currentText())


class ctkPathLineEdit(QWidget):
    """As CTK 5056664a's: the path is the text of the line edit in the history combo box (``currentPath()``
    returns it even when it is not a valid path), ``setCurrentPath`` sets that text, and only the line edit's
    textChanged -> ``updateHasValidInput()`` (Libs/Widgets/ctkPathLineEdit.cpp:730-746) signals: it emits
    ``currentPathChanged`` only when the text is acceptable to the validator built from ``nameFilters`` (so
    clearing the field, or a name without the filter's extension, emits nothing), and ``validInputChanged(bool)``
    when acceptability changes (HasValidInput starts false). The parameterNodeWrapper's connector listens to
    currentPathChanged only (guiConnectors.py:673-706)."""

    _is_standin = True
    _api_source = ("header", "ctkPathLineEdit")
    _prop_defaults = {"enabled": True, "showBrowseButton": True, "showHistoryButton": True,
                      "filters": "AllEntries|NoDotAndDotDot|Readable"}

    def __init__(self, *args):
        """``ctkPathLineEdit(parent)`` or ``ctkPathLineEdit(label, nameFilters[, filters][, parent])``."""
        super().__init__(*[a for a in args if isinstance(a, QWidget) or a is None][-1:])
        object.__setattr__(self, "_combo", _PathComboBox(self))
        object.__setattr__(self, "_has_valid_input", False)
        self._combo.lineEdit().textChanged.connect(self._update_has_valid_input)   # connected first, as in CTK
        if args and isinstance(args[0], str):
            self._props["label"] = args[0]
        self._set_nameFilters(args[1] if len(args) > 1 and isinstance(args[1], (list, tuple)) else [])

    def _update_has_valid_input(self, text):
        old, valid = self._has_valid_input, self._combo.lineEdit().hasAcceptableInput()
        object.__setattr__(self, "_has_valid_input", valid)
        if valid:
            self._emit("currentPathChanged", self._get_currentPath())
        if valid != old:
            self._emit("validInputChanged", valid)

    def _get_currentPath(self):
        return self._combo.lineEdit().text

    def _set_currentPath(self, path):
        self._combo.lineEdit().setText(str(path))

    def setCurrentPath(self, path):
        self._set_currentPath(path)

    def _set_nameFilters(self, name_filters):
        self._props["nameFilters"] = list(name_filters or [])
        object.__setattr__(self._combo.lineEdit(), "_pattern", name_filters_to_pattern(self._props["nameFilters"]))

    def _set_showHistoryButton(self, visible):
        if not visible:     # CTK then rebuilds the field on a plain QLineEdit and comboBox() is null: not emulated
            raise NotImplementedError("ctkPathLineEdit.showHistoryButton = False is not emulated")

    def comboBox(self):
        return self._combo

    def addCurrentPathToHistory(self):
        if self._get_currentPath():
            object.__setattr__(self, "_history", getattr(self, "_history", []) + [self._get_currentPath()])


def type_path(path_line_edit, text):
    """The user edits the path field until it reads ``text`` (e.g. selects all and deletes: ``""``): the line
    edit emits textEdited, then textChanged (QWidgetLineControl::finishChange), unlike ``currentPath = text``."""
    edit = path_line_edit.comboBox().lineEdit()
    if text != edit.text:
        edit._props["text"] = str(text)
        edit._emit("textEdited", str(text))
        edit._emit("textChanged", str(text))


class ctkDirectoryButton(QWidget):
    _is_standin = True
    _api_source = ("header", "ctkDirectoryButton")

    def _set_directory(self, path):
        path = str(path)
        if path != self._props["directory"]:
            self._props["directory"] = path
            self._emit("directoryChanged", path)


class ctkComboBox(QComboBox):
    _is_standin = True
    _api_source = ("header", "ctkComboBox")


class ctkCheckBox(QCheckBox):
    _is_standin = True
    _api_source = ("header", "ctkCheckBox")


class _NoHeader(QWidget):
    """CTK/Slicer classes the reference code names (guiConnectors' ``type(w) in (...)`` checks)
    but whose headers are not in the reference folder: they exist for identity, cannot be built."""

    _is_standin = True
    _api_source = ("qt", "QWidget")

    def __init__(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__}: no header in the reference, no stand-in")


def no_header(name):
    return type(name, (_NoHeader,), {"_is_standin": True, "_api_source": ("qt", "QWidget")})
