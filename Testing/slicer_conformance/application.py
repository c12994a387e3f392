"""``slicer.app``, the event loop, QSettings, dialogs and file-system helpers of a session.

Why: these are the application-wide C++ services a module reaches through Qt.  They are tied to
one :class:`~slicer_conformance.session.SlicerSession` (its temp/settings folders, its dialog
record and answer queue, its timers) so that two sessions never share state except what real
Slicer shares across restarts (the settings file).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from . import widgets
from .strict import StrictQObject


# ============================================================================ event loop
class EventLoop:
    """Timers and deferred calls; nothing fires until :meth:`process_events` runs."""

    def __init__(self):
        self.timers = []
        self.calls = []  # (due, func)
        self._depth = 0

    def add_timer(self, t):
        if t not in self.timers:
            self.timers.append(t)

    def remove_timer(self, t):
        if t in self.timers:
            self.timers.remove(t)

    def call_later(self, delay_s, func):
        self.calls.append((time.monotonic() + delay_s, func))

    def process_events(self):
        if self._depth > 2:  # processEvents() re-entered from a slot: Qt would not recurse further
            return
        self._depth += 1
        try:
            now = time.monotonic()
            due_calls = [c for c in self.calls if c[0] <= now]
            self.calls = [c for c in self.calls if c[0] > now]
            for _, func in due_calls:
                from .strict import call_slot
                call_slot(func, ())
            for t in [t for t in self.timers if t._due is not None and t._due <= now]:
                if t._due is not None:
                    t._fire()
        finally:
            self._depth -= 1


# ============================================================================ settings
class SettingsStore:
    """One settings file per settings folder.  Within a session values keep their Python type;
    the file stores what Qt's INI backend would give back after a restart (scalars as strings,
    string lists as lists), so a later session sees 'true'/'5' like real Slicer does."""

    def __init__(self, path: Path, initial: dict):
        self.path = path
        self.values = {}
        if path.is_file():
            self.values = json.loads(path.read_text())
        for k, v in initial.items():
            self.values.setdefault(k, v)
        self.save()

    @staticmethod
    def _disk(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [SettingsStore._disk(x) for x in v]
        if v is None:
            return None
        return str(v)

    def save(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({k: self._disk(v) for k, v in self.values.items()}, indent=1))


class QSettings(widgets.QObject):
    _is_standin = True
    _api_source = ("qt", "QSettings")
    _store: SettingsStore = None  # set by the session

    def __init__(self, *args):
        super().__init__()
        object.__setattr__(self, "_group", [])

    def _key(self, key):
        return "/".join(self._group + [str(key)])

    def value(self, key, default=None, type=None):  # noqa: A002
        v = self._store.values.get(self._key(key), default)
        return type(v) if type is not None and v is not None else v

    def setValue(self, key, value):
        self._store.values[self._key(key)] = value
        self._store.save()

    def contains(self, key):
        return self._key(key) in self._store.values

    def remove(self, key):
        k = self._key(key)
        for name in [n for n in self._store.values if n == k or n.startswith(k + "/")]:
            del self._store.values[name]
        self._store.save()

    def sync(self):
        self._store.save()

    def allKeys(self):
        prefix = "/".join(self._group)
        return [k[len(prefix) + 1:] if prefix else k for k in self._store.values
                if not prefix or k.startswith(prefix + "/")]

    def childKeys(self):
        return [k for k in self.allKeys() if "/" not in k]

    def childGroups(self):
        return sorted({k.split("/")[0] for k in self.allKeys() if "/" in k})

    def beginGroup(self, prefix):
        self._group.append(prefix)

    def endGroup(self):
        self._group.pop()

    def fileName(self):
        return str(self._store.path)

    def clear(self):
        self._store.values.clear()
        self._store.save()


# ============================================================================ dialogs
class Dialogs:
    """The session's record of dialogs and the queue of answers the test provides."""

    def __init__(self):
        self.record = []
        self.answers = []
        self.cursor = lambda: None     # the application's override cursor (the session wires slicer.app's)

    def add(self, kind, text, **extra):
        """Each dialog is recorded with the override cursor it appeared under: QApplication shows a modal dialog
        under the override cursor (Qt applies it to every window, qguiapplication.cpp setOverrideCursor), so a
        question asked inside ``tryWithErrorDisplay(waitCursor=True)`` (slicer/util.py:3570-3580) shows a busy
        cursor over its buttons. Tests assert ``cursor is None`` for questions."""
        self.record.append({"kind": kind, "text": text, "cursor": self.cursor(), **extra})

    def take_answer(self, kind, text):
        if not self.answers:
            raise RuntimeError(f"{kind} dialog {text!r} was shown but the test queued no answer "
                               "(use session.answer(...))")
        return self.answers.pop(0)


def _buttons_value(buttons):
    return int(getattr(buttons, "value", buttons) or 0)


def _answer_to_button(answer, buttons):
    """True -> the accepting button among ``buttons``, False -> the rejecting one; ints pass through."""
    if isinstance(answer, bool):
        order = ["Ok", "Yes", "Save", "Retry", "Open", "Apply"] if answer else ["Cancel", "No", "Close", "Abort",
                                                                                   "Discard", "Ignore"]
        b = _buttons_value(buttons)
        for name in order:
            v = getattr(QMessageBox, name)
            if b & v:
                return v
        return QMessageBox.Ok if answer else QMessageBox.Cancel
    return answer


class QMessageBox(widgets.QDialog):
    _is_standin = True
    _api_source = ("qt", "QMessageBox")
    _dialogs: Dialogs = None

    @classmethod
    def _kind(cls, icon, buttons):
        icon = int(getattr(icon, "value", icon) or 0)
        nbuttons = bin(_buttons_value(buttons)).count("1")
        if icon == QMessageBox.Question or nbuttons > 1:
            return "question"
        return {int(QMessageBox.Critical): "error", int(QMessageBox.Warning): "warning",
                int(QMessageBox.Information): "info"}.get(icon, "message")

    def _show_modal(self):
        text = self._props.get("text", "")
        buttons = self._props.get("standardButtons") or QMessageBox.Ok
        kind = self._kind(self._props.get("icon"), buttons)
        self._dialogs.add(kind, text, title=self._props.get("windowTitle", ""))
        if kind == "question":
            return _answer_to_button(self._dialogs.take_answer(kind, text), buttons)
        return QMessageBox.Ok

    def exec(self):
        return self._show_modal()

    def exec_(self):
        return self._show_modal()

    def setText(self, text):
        self._props["text"] = text

    def setStandardButtons(self, buttons):
        self._props["standardButtons"] = buttons

    def accept(self):
        pass

    @classmethod
    def _static(cls, icon, parent, title, text, buttons=None, *rest):
        box = cls()
        box._props.update(text=text, windowTitle=title, icon=icon,
                          standardButtons=buttons if buttons is not None else QMessageBox.Ok)
        return box._show_modal()

    @staticmethod
    def question(parent, title, text, buttons=None, *rest):
        if buttons is None:
            buttons = QMessageBox.Yes | QMessageBox.No
        return QMessageBox._static(QMessageBox.Question, parent, title, text, buttons)

    @staticmethod
    def warning(parent, title, text, *rest):
        return QMessageBox._static(QMessageBox.Warning, parent, title, text, *rest)

    @staticmethod
    def critical(parent, title, text, *rest):
        return QMessageBox._static(QMessageBox.Critical, parent, title, text, *rest)

    @staticmethod
    def information(parent, title, text, *rest):
        return QMessageBox._static(QMessageBox.Information, parent, title, text, *rest)


class ctkMessageBox(QMessageBox):
    """ctkMessageBox (no header in the reference): QMessageBox plus its 'Don't show again'
    properties, which slicer.util.messageBox sets through ``hasattr``/``setattr``."""

    _is_standin = True
    _api_source = ("app", "ctk_message_box_api")


def ctk_message_box_api():
    from . import qtapi
    api = qtapi.Api("ctkMessageBox", source="hand: ctkMessageBox.h dontShowAgain properties")
    for p in ("dontShowAgain", "dontShowAgainVisible"):
        api.properties[p] = ("bool", True)
    api.properties["dontShowAgainSettingsKey"] = ("QString", True)
    return api.merged(qtapi.qt_api("QMessageBox"))


from . import qtapi as _qtapi  # noqa: E402
_qtapi.ctk_message_box_api = ctk_message_box_api


class QFileDialog(widgets.QDialog):
    """Static pickers answer from the session queue (a path string, or None/'' for Cancel)."""

    _is_standin = True
    _api_source = ("qt", "QFileDialog")
    _dialogs: Dialogs = None

    @staticmethod
    def _pick(kind, caption):
        QFileDialog._dialogs.add(kind, caption or "")
        answer = QFileDialog._dialogs.take_answer(kind, caption)
        return "" if answer in (None, False) else answer

    @staticmethod
    def getExistingDirectory(parent=None, caption="", *rest):
        return QFileDialog._pick("directory", caption)

    @staticmethod
    def getOpenFileName(parent=None, caption="", *rest):
        return QFileDialog._pick("open-file", caption)

    @staticmethod
    def getSaveFileName(parent=None, caption="", *rest):
        return QFileDialog._pick("save-file", caption)


# ============================================================================ files
class QFile(widgets.QObject):
    _is_standin = True
    _api_source = ("qt", "QFile")

    def __init__(self, path=""):
        super().__init__()
        object.__setattr__(self, "_path", str(path))
        object.__setattr__(self, "_open", False)

    def exists(self, *args):
        return os.path.exists(args[0] if args else self._path)

    def open(self, mode=None):
        object.__setattr__(self, "_open", os.path.isfile(self._path))
        return self._open

    def close(self):
        object.__setattr__(self, "_open", False)

    def fileName(self):
        return self._path

    def readAll(self):
        return Path(self._path).read_bytes()

    def isOpen(self):
        return self._open


class QDir(widgets._Value):
    _pyside = "QDir"

    def __init__(self, path=""):
        self._path = str(path or os.getcwd())

    def absolutePath(self):
        return os.path.abspath(self._path)

    def path(self):
        return self._path

    def exists(self, *args):
        return os.path.exists(os.path.join(self._path, *args))

    def mkpath(self, path):
        os.makedirs(os.path.join(self._path, path), exist_ok=True)
        return True

    def filePath(self, name):
        return os.path.join(self._path, name)

    def absoluteFilePath(self, name):
        return os.path.abspath(os.path.join(self._path, name))


class QStandardPaths(widgets._Value):
    _pyside = "QStandardPaths"
    _root: Path = None  # set by the session

    @staticmethod
    def writableLocation(location):
        loc = int(getattr(location, "value", location))
        names = {QStandardPaths.DocumentsLocation: "Documents", QStandardPaths.HomeLocation: "home",
                 QStandardPaths.TempLocation: "tmp", QStandardPaths.AppDataLocation: "AppData",
                 QStandardPaths.DownloadLocation: "Downloads", QStandardPaths.CacheLocation: "cache"}
        path = QStandardPaths._root / names.get(loc, f"location{loc}")
        path.mkdir(parents=True, exist_ok=True)
        return str(path)


for _name in ("DocumentsLocation", "HomeLocation", "TempLocation", "AppDataLocation", "DownloadLocation",
              "CacheLocation"):
    setattr(QStandardPaths, _name, _qtapi.qt_enum_value("QStandardPaths", _name))


class QFileInfo(widgets._Value):
    _pyside = "QFileInfo"

    def __init__(self, *args):
        parts = [a.absolutePath() if isinstance(a, QDir) else str(a) for a in args]
        self._path = os.path.join(*parts) if parts else ""

    def absoluteFilePath(self):
        return os.path.abspath(self._path)

    def exists(self):
        return os.path.exists(self._path)

    def fileName(self):
        return os.path.basename(self._path)


# ============================================================================ slicer.app
class qSlicerModuleManager(StrictQObject):
    _is_standin = True
    _api_source = ("app", "module_manager_api")


class qSlicerApplication(StrictQObject):
    """``slicer.app``.  Members: SLICER_APP_MEMBERS (hand list from Slicer headers) + QApplication."""

    _is_standin = True
    _api_source = ("app", "slicer_app_api")

    def __init__(self, session):
        super().__init__()
        object.__setattr__(self, "_session", session)
        object.__setattr__(self, "_module_manager", qSlicerModuleManager())
        object.__setattr__(self, "_cursor_stack", [])
        self._props.update(slicerHome=str(session.work / "SlicerHome"), temporaryPath=str(session.temp_dir),
                           defaultScenePath=str(session.work / "Scenes"), cachePath=str(session.work / "cache"),
                           majorVersion=5, minorVersion=12, revision="33000", releaseType="Stable",
                           documentationBaseUrl="https://slicer.readthedocs.io/en/5.12", platform="linux-amd64",
                           os="linux", arch="amd64", applicationName="Slicer", applicationVersion="5.12.3",
                           mainApplicationName="Slicer", mainApplicationMajorVersion=5,
                           mainApplicationMinorVersion=12, mainApplicationPatchVersion=3, isInstalled=True)

    def testingEnabled(self):
        return self._session.testing

    def processEvents(self, *args):
        self._session.loop.process_events()

    def mrmlScene(self):
        return self._session.scene

    def moduleManager(self):
        return self._module_manager

    def userSettings(self):
        return QSettings()

    def settings(self):
        return QSettings()

    def revisionUserSettings(self):
        return QSettings()

    def setOverrideCursor(self, cursor):
        self._cursor_stack.append(cursor)

    def restoreOverrideCursor(self):
        if self._cursor_stack:
            self._cursor_stack.pop()

    def overrideCursor(self):
        return self._cursor_stack[-1] if self._cursor_stack else None

    def topLevelWidgets(self):
        return [w for w in (self._session.main_window,) if w is not None]

    def layoutManager(self):
        return None  # no views outside Slicer; modules must tolerate None

    def pythonConsole(self):
        return None

    def moduleDocumentationUrl(self, module_name):
        return f"{self._props['documentationBaseUrl']}/user_guide/modules/{module_name.lower()}.html"

    def dicomDatabase(self):
        import sys
        return getattr(sys.modules["slicer"], "dicomDatabase", None)

    def applicationLogic(self):
        return self._session.app_logic

    def moduleLogic(self, name):
        mod = getattr(self._session.modules_ns, name.lower(), None)
        return mod.logic() if mod is not None else None

    def restart(self):
        raise RuntimeError("slicer.app.restart() called inside a conformance session")

    def launchDesigner(self, args=None):
        return False

    def loadFiles(self, paths, messages=None):
        return False

    @staticmethod
    def translate(context, text, *args):
        return text  # no .qm translations are loaded: source text, as in an English Slicer

    def _get_applicationName(self):
        return "Slicer"
