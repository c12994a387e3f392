"""Behaviour of the CTK widget stand-ins (module ``ctk`` inside a session), on the Qt ones of :mod:`widgets`.

Why: the module's path fields, folder button and collapsible sections bind to parameters through the real GUI
connectors, which check these exact classes; names are checked against the CTK headers by :mod:`strict`.
"""

from __future__ import annotations

from .widgets import QAbstractButton, QCheckBox, QComboBox, QWidget


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


class ctkPathLineEdit(QWidget):
    _is_standin = True
    _api_source = ("header", "ctkPathLineEdit")
    _prop_defaults = {"enabled": True, "showBrowseButton": True, "filters": "AllEntries|NoDotAndDotDot|Readable"}

    def _set_currentPath(self, path):
        path = str(path)
        if path != self._props["currentPath"]:
            self._props["currentPath"] = path
            self._emit("currentPathChanged", path)

    def setCurrentPath(self, path):
        self._set_currentPath(path)

    def addCurrentPathToHistory(self):
        object.__setattr__(self, "_history", getattr(self, "_history", []) + [self._props["currentPath"]])


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
