"""Allowed-member tables for the Qt/CTK/Slicer stand-ins, built from the REAL APIs.

Why: a stand-in that accepts any name hides misspelt calls.  Every stand-in class therefore
carries an :class:`Api` (properties, signals, methods) that is computed, never hand-typed:

* plain Qt classes: the PySide6 wheel (``dir(cls)`` plus ``staticMetaObject`` properties and
  signals, inherited ones included);
* CTK and qMRML classes: the C++ headers under ``<reference>/cpp-headers`` (Q_PROPERTY, public
  slots, signals, Q_INVOKABLE), plus the members of the base class named in ``class X : public B``;
* ``slicer.app`` (qSlicerApplication): the one hand-written table in this package
  (:data:`SLICER_APP_MEMBERS`), transcribed from Slicer's own headers (see its comment).

PythonQt (Slicer's binding) rules mirrored here: Q_PROPERTYs are attributes, public slots /
Q_INVOKABLEs / signals are members, a C++ public method that is neither slot nor Q_INVOKABLE is
not reachable from Python, every QObject also has ``name`` (alias of objectName) and
``className()``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def reference_dir() -> Path:
    """Where Slicer 5.12's pure-Python layer lives ($DIFFUMAMBA_SLICER_REFERENCE overrides)."""
    return Path(os.environ.get("DIFFUMAMBA_SLICER_REFERENCE",
                               REPO.parent / "shared" / "reference" / "slicer-5.12-python")).resolve()


# Members PythonQt adds to every QObject wrapper (not C++ members of QObject).
PYTHONQT_QOBJECT_EXTRAS = {"name", "className", "delete"}


@dataclasses.dataclass
class Api:
    """What Python may touch on one class: property name -> (type, writable), signal name ->
    list of normalized signatures (first = the overload ``obj.signal.connect`` uses), method names
    and enum member values (exposed flat on the class, as PythonQt does)."""

    cls_name: str
    properties: dict = dataclasses.field(default_factory=dict)
    signals: dict = dataclasses.field(default_factory=dict)
    methods: set = dataclasses.field(default_factory=set)
    enums: dict = dataclasses.field(default_factory=dict)
    source: str = ""

    def merged(self, other: "Api") -> "Api":
        out = Api(self.cls_name, dict(other.properties), {k: list(v) for k, v in other.signals.items()},
                  set(other.methods), dict(other.enums), self.source)
        out.properties.update(self.properties)
        for k, v in self.signals.items():
            out.signals[k] = v + [s for s in out.signals.get(k, []) if s not in v]
        out.methods |= self.methods
        out.enums.update(self.enums)
        return out

    def allows(self, name: str) -> bool:
        return name in self.properties or name in self.signals or name in self.methods


def normalize_signature(sig: str) -> str:
    """'currentPathChanged(const QString &)' -> 'currentPathChanged(QString)'."""
    sig = re.sub(r"\bconst\b", "", sig).replace("&", "")
    name, _, args = sig.partition("(")
    args = args.rstrip().rstrip(")")
    parts = []
    for a in args.split(","):
        a = a.split("=")[0].strip()
        if not a:
            continue
        # drop a trailing parameter name: "vtkMRMLNode* node" -> "vtkMRMLNode*"
        t = a
        toks = a.replace("*", " * ").split()
        if len(toks) >= 2 and re.match(r"^\w+$", toks[-1]) and toks[-2] not in ("unsigned", "signed", "long"):
            toks = toks[:-1]
        t = "".join(x if x == "*" else (" " + x if i else x) for i, x in enumerate(toks)).strip()
        t = t.replace(" *", "*")
        parts.append(t)
    return f"{name.strip()}({','.join(parts)})"


# ----------------------------------------------------------------------------- PySide6
def _pyside_class(name: str):
    from PySide6 import QtCore, QtGui, QtWidgets
    mods = [QtWidgets, QtGui, QtCore]
    try:
        from PySide6 import QtUiTools
        mods.append(QtUiTools)
    except ImportError:  # pragma: no cover
        pass
    for mod in mods:
        if hasattr(mod, name):
            return getattr(mod, name)
    raise KeyError(f"{name} is not a PySide6 class")


@functools.lru_cache(maxsize=None)
def qt_api(name: str) -> Api:
    """Api of a plain Qt class, from PySide6 (inherited members included)."""
    if name == "QUiLoader":
        try:
            _pyside_class(name)
        except KeyError:  # hand list, only if PySide6 lacks QtUiTools
            return Api(name, methods={"load", "setWorkingDirectory", "workingDirectory"}, source="hand")
    cls = _pyside_class(name)
    api = Api(name, source=f"PySide6.{cls.__module__}.{name}")
    mo = getattr(cls, "staticMetaObject", None)
    if mo is not None:
        for i in range(mo.propertyCount()):
            p = mo.property(i)
            api.properties[p.name()] = (p.typeName(), p.isWritable())
        for i in range(mo.methodCount()):
            m = mo.method(i)
            sig = bytes(m.methodSignature()).decode()
            nm = sig.split("(")[0]
            if nm.startswith("_q_"):
                continue
            if m.methodType().name == "Signal":
                api.signals.setdefault(nm, []).append(sig)
            else:
                api.methods.add(nm)
    for attr in dir(cls):
        if attr.startswith("_") or attr in api.properties or attr in api.signals:
            continue
        val = getattr(cls, attr, None)
        if isinstance(val, type):
            continue
        if hasattr(val, "value") and not callable(val):  # enum member (flattened like PythonQt)
            try:
                api.enums[attr] = int(val.value)
            except (TypeError, ValueError):
                pass
            continue
        api.methods.add(attr)
    if mo is not None:  # a QObject class: PythonQt extras
        api.methods |= {"className", "delete"}
        api.properties.setdefault("name", ("QString", True))
    return api


def qt_enum_value(owner: str, member: str):
    """Value of a Qt enum member as an int (PythonQt flattens enums: ``qt.QMessageBox.Ok``)."""
    val = getattr(_pyside_class(owner) if owner != "Qt" else __import__("PySide6.QtCore", fromlist=["Qt"]).Qt, member)
    if hasattr(val, "value"):
        return int(val.value)
    raise AttributeError(member)


# ----------------------------------------------------------------------------- C++ headers
HEADER_DIRS = ("cpp-headers/Slicer", "cpp-headers/CTK")


def _find_header(name: str) -> Path | None:
    for d in HEADER_DIRS:
        p = reference_dir() / d / f"{name}.h"
        if p.is_file():
            return p
    return None


def has_header(name: str) -> bool:
    return _find_header(name) is not None


def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def _class_body(text: str, name: str) -> tuple[str, str]:
    m = re.search(r"\bclass\s+(?:\w+_EXPORT\s+)?" + name + r"\s*:\s*([^{;]*)\{", text)
    if not m:
        raise ValueError(f"class {name} not found in header")
    bases = m.group(1)
    i = m.end()
    depth = 1
    j = i
    while depth and j < len(text):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
        j += 1
    return text[i:j - 1], bases


def _top_level_statements(body: str):
    """Split a class body into (section-label-or-statement) at brace depth 0; bodies of inline
    functions and enums are kept whole but not descended into."""
    out, cur, depth = [], [], 0
    i = 0
    while i < len(body):
        c = body[i]
        if c == "{":
            depth += 1
            cur.append(c)
        elif c == "}":
            depth -= 1
            cur.append(c)
            if depth == 0:
                out.append("".join(cur).strip())
                cur = []
                if body[i + 1:i + 2] == ";":
                    i += 1
        elif c == ";" and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        elif c == ":" and depth == 0 and body[i + 1:i + 2] != ":" and body[i - 1:i] != ":":
            label = "".join(cur).strip().split("\n")[-1].strip()
            if re.fullmatch(r"(public|protected|private)\s*(slots|Q_SLOTS)?|signals|Q_SIGNALS", label):
                out.append(label + ":")
                cur = []
            else:
                cur.append(c)
        else:
            cur.append(c)
        i += 1
    return [s for s in out if s]


@functools.lru_cache(maxsize=None)
def header_api(name: str) -> Api:
    """Api of a CTK/Slicer widget from its header, merged with its base class's Api."""
    path = _find_header(name)
    if path is None:
        raise KeyError(f"no header for {name}")
    text = _strip_comments(path.read_text())
    text = re.sub(r"^\s*#.*$", "", text, flags=re.M)  # preprocessor lines (both #ifdef branches kept)
    body, bases = _class_body(text, name)
    api = Api(name, source=str(path.relative_to(reference_dir())))
    for pm in re.finditer(r"Q_PROPERTY\s*\(([^)]*)\)", body):
        toks = pm.group(1).split()
        ptype, pname = " ".join(toks[:toks.index("READ") - 1]), toks[toks.index("READ") - 1]
        api.properties[pname] = (ptype, "WRITE" in toks)
    body = re.sub(r"Q_PROPERTY\s*\([^)]*\)", "", body)
    body = re.sub(r"\b(Q_OBJECT|QVTK_OBJECT|Q_GADGET)\b", ";", body)
    body = re.sub(r"\bQ_(?!INVOKABLE)\w+\s*\([^)]*\)\s*;?", ";", body)
    section = "private"
    for st in _top_level_statements(body):
        if st.endswith(":") and "(" not in st:
            label = st[:-1].strip()
            if label in ("signals", "Q_SIGNALS"):
                section = "signals"
            elif re.fullmatch(r"public\s+(slots|Q_SLOTS)", label):
                section = "slots"
            else:
                section = "other"
            continue
        em = re.match(r"^enum\s+(\w+)\s*\{(.*)\}$", st, flags=re.S)
        if em:
            val = -1
            for item in em.group(2).split(","):
                item = item.strip()
                if not item:
                    continue
                k, _, v = item.partition("=")
                k = k.strip()
                v = v.strip()
                if v:
                    try:
                        val = int(eval(v, {}, dict(api.enums)))  # noqa: S307 - literal header constants
                    except Exception:
                        val += 1
                else:
                    val += 1
                api.enums[k] = val
            continue
        if "(" not in st or st.startswith(("Q_OBJECT", "Q_DECLARE", "Q_ENUM", "Q_FLAG", "typedef", "friend",
                                            "QVTK_OBJECT", "Q_DISABLE")):
            continue
        decl = st.split("{")[0]
        invokable = "Q_INVOKABLE" in decl
        m = re.search(r"(~?\w+)\s*\(", decl.replace("Q_INVOKABLE", ""))
        if not m:
            continue
        mname = m.group(1)
        if mname == name or mname.startswith("~") or mname in ("Q_DECLARE_PRIVATE", "Q_DISABLE_COPY"):
            continue
        if section == "signals":
            api.signals.setdefault(mname, []).append(normalize_signature(decl[m.start(1):].split(")")[0] + ")"))
        elif section == "slots" or invokable:
            api.methods.add(mname)
    base = re.search(r"public\s+(\w+)", bases)
    if base:
        bname = base.group(1)
        if bname == "qSlicerWidget":  # no header shipped: QWidget + qSlicerObject (hand table below)
            api = api.merged(qslicerwidget_api())
            api.cls_name = name
            return api
        base_api = header_api(bname) if has_header(bname) else qt_api(bname)
        api = api.merged(base_api)
        api.cls_name = name
    return api


# ----------------------------------------------------------------------------- slicer.app
# The ONLY hand-written member table.  Slicer ships no header for qSlicerApplication in the
# reference folder, so these names were transcribed from Slicer/Slicer's
# Base/QTCore/qSlicerCoreApplication.h (commit 703a9d4a), Base/QTGUI/qSlicerApplication.h
# (commit 0017d7a8) and Base/QTCore/qSlicerBaseQTCorePythonQtDecorators.h (testingEnabled,
# processEvents, sendEvent decorators): Q_PROPERTYs, Q_INVOKABLEs, public slots and signals only.
# The QApplication members (setOverrideCursor, restoreOverrideCursor, topLevelWidgets, clipboard,
# keyboardModifiers, applicationName, ...) come from PySide6 on top of this list.
SLICER_APP_MEMBERS = {
    "properties": ["slicerHome", "defaultScenePath", "slicerSharePath", "temporaryPath", "cachePath",
                   "startupWorkingPath", "launcherExecutableFilePath", "launcherSettingsFilePath",
                   "slicerDefaultSettingsFilePath", "slicerUserSettingsFilePath",
                   "slicerRevisionUserSettingsFilePath", "extensionsInstallPath", "intDir", "isInstalled",
                   "releaseType", "repositoryUrl", "repositoryBranch", "repositoryRevision", "revision",
                   "majorVersion", "minorVersion", "documentationBaseUrl", "documentationVersion",
                   "documentationLanguage", "platform", "arch", "os", "isCustomMainApplication",
                   "mainApplicationName", "mainApplicationRepositoryUrl", "mainApplicationRepositoryRevision",
                   "mainApplicationRevision", "mainApplicationMajorVersion", "mainApplicationMinorVersion",
                   "mainApplicationPatchVersion"],
    "methods": [  # qSlicerCoreApplication Q_INVOKABLE
                "startupEnvironment", "environment", "setEnvironmentVariable", "isEnvironmentVariableValueSet",
                "prependEnvironmentVariable", "appendEnvironmentVariable", "mrmlScene", "applicationLogic",
                "moduleLogic", "addModuleAssociatedNodeType", "removeModuleAssociatedNodeType",
                "modulesAssociatedWithNodeType", "allModuleAssociatedNodeTypes", "extensionsManagerModel",
                "errorLogModel", "moduleManager", "coreIOManager", "defaultSettings", "userSettings", "settings",
                "revisionUserSettings", "moduleDocumentationUrl", "dicomDatabase", "translationFolders",
                "loadTranslations", "loadLanguage", "loadCaCertificates", "registerResource",
                "showConsoleMessage", "toSlicerHomeAbsolutePath", "toSlicerHomeRelativePath",
                "toSlicerHomeAbsolutePaths", "toSlicerHomeRelativePaths",
                # qSlicerCoreApplication public slots
                "restart", "unregisterResource", "setRenderPaused", "pauseRender", "resumeRender", "loadFiles",
                "openUrl",
                # PythonQt decorators (qSlicerBaseQTCorePythonQtDecorators.h)
                "testingEnabled", "processEvents", "sendEvent",
                # qSlicerApplication Q_INVOKABLE
                "commandOptions", "ioManager", "pythonManager", "pythonConsole", "pythonConsoleLogLevel",
                "layoutManager", "setLayoutManager", "settingsDialog", "openSettingsDialog",
                "logApplicationInformation", "createDICOMBrowserForMainDatabase", "isCodePageUtf8",
                # qSlicerApplication public slots
                "openNodeModule", "confirmRestart", "launchDesigner", "openExtensionsManagerDialog",
                "openExtensionsCatalogWebsite", "openApplicationDownloadWebsite", "numberOfRecentLogFilesToKeep",
                "recentLogFiles", "currentLogFile", "setHasBorderInFullScreen", "setPythonConsoleLogLevel"],
    "signals": ["mrmlSceneChanged(vtkMRMLScene*)", "urlReceived(QString)",
                "invokeEventRequested(unsigned int,void*,unsigned long,void*)", "startupCompleted()",
                "renderPaused(bool)"],
}

# qSlicerModuleManager (Base/QTCore/qSlicerModuleManager.h): the signals/slots modules use.
MODULE_MANAGER_MEMBERS = {
    "methods": ["factoryManager", "module", "modulesNames", "isLoaded", "moduleNames"],
    "signals": ["moduleLoaded(QString)", "moduleAboutToBeUnloaded(QString)", "moduleUnloaded(QString)"],
}


def slicer_app_api() -> Api:
    api = Api("qSlicerApplication", source="SLICER_APP_MEMBERS (hand list from Slicer headers)")
    api.properties = {p: ("QString", False) for p in SLICER_APP_MEMBERS["properties"]}
    for p in ("defaultScenePath", "temporaryPath", "cachePath", "extensionsInstallPath"):
        api.properties[p] = ("QString", True)
    api.methods = set(SLICER_APP_MEMBERS["methods"])
    for s in SLICER_APP_MEMBERS["signals"]:
        api.signals.setdefault(s.split("(")[0], []).append(s)
    return api.merged(qt_api("QApplication"))


def module_manager_api() -> Api:
    api = Api("qSlicerModuleManager", methods=set(MODULE_MANAGER_MEMBERS["methods"]),
              source="MODULE_MANAGER_MEMBERS (hand list)")
    for s in MODULE_MANAGER_MEMBERS["signals"]:
        api.signals.setdefault(s.split("(")[0], []).append(s)
    return api.merged(qt_api("QObject"))


# qSlicerWidget (Base/QTGUI/qSlicerWidget.h, not in the reference folder): QWidget plus the
# qSlicerObject mixin; PythonQt sees its slot setMRMLScene, Q_INVOKABLE mrmlScene and signal
# mrmlSceneChanged(vtkMRMLScene*).  Hand table, used only as the base of qSlicerMarkupsPlaceWidget.
def qslicerwidget_api() -> Api:
    api = Api("qSlicerWidget", methods={"setMRMLScene", "mrmlScene"},
              signals={"mrmlSceneChanged": ["mrmlSceneChanged(vtkMRMLScene*)"]}, source="hand")
    return api.merged(qt_api("QWidget"))
