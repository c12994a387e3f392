"""SlicerSession: runs a scripted module's own file against Slicer 5.12's real Python layer.

Why: 3D Slicer cannot be installed here, but its pure-Python layer (slicer.util,
parameterNodeWrapper, ScriptedLoadableModule, ...) and its MRML classes (slicer-core wheel) can
run.  The session assembles a ``slicer`` package from those real parts, adds strict stand-ins for
what is C++/Qt (``qt``, ``ctk``, qMRML widgets, ``slicer.app``), and drives the module through
the same steps the application does (load, show/enter, exit, scene close, reload, unload).
Everything it installs in ``sys.modules``/``sys.path`` is restored when it ends.
"""

from __future__ import annotations

import importlib.util
import sys
import time
import types
from pathlib import Path

from . import application, ctkwidgets, markups, mrmlwidgets, qtapi, uiloader, widgets
from .strict import Hooks, StrictQObject


# ----------------------------------------------------------------------------- module objects
class qSlicerScriptedLoadableModule(StrictQObject):
    """``parent`` of a ScriptedLoadableModule and ``slicer.modules.<name>``.  Members: the
    Q_PROPERTYs of qSlicerAbstractCoreModule plus widgetRepresentation()/logic() (hand list)."""

    _is_standin = True
    _api_source = ("app", "scripted_module_api")
    _prop_defaults = {"categories": [], "dependencies": [], "contributors": []}

    def widgetRepresentation(self):
        return self._session._ensure_widget(self._props["name"])

    def createNewWidgetRepresentation(self):
        return self._session._ensure_widget(self._props["name"])

    def logic(self):
        return None


def scripted_module_api():
    api = qtapi.Api("qSlicerScriptedLoadableModule", source="hand: qSlicerAbstractCoreModule.h Q_PROPERTYs")
    for p in ("title", "helpText", "acknowledgementText", "path", "slicerWikiUrl"):
        api.properties[p] = ("QString", True)
    for p in ("categories", "contributors", "dependencies", "associatedNodeTypes"):
        api.properties[p] = ("QStringList", True)
    api.properties.update(icon=("QIcon", True), hidden=("bool", True), index=("int", True),
                          isInstalled=("bool", False), isBuiltIn=("bool", False))
    api.methods |= {"widgetRepresentation", "createNewWidgetRepresentation", "logic", "isHidden"}
    return api.merged(qtapi.qt_api("QObject"))


qtapi.scripted_module_api = scripted_module_api


class _LogicModule:
    """``slicer.modules.<name>`` for a C++ module whose logic slicer-core provides."""

    def __init__(self, name, logic):
        self.name, self._logic = name, logic

    def logic(self):
        return self._logic


def _site_slicer_dir():
    import slicer_core
    return Path(slicer_core.__file__).resolve().parent.parent / "slicer"


# ----------------------------------------------------------------------------- qt / ctk modules
_QT_CLASSES = {n: getattr(widgets, n) for n in dir(widgets) if isinstance(getattr(widgets, n), type)
               and n.startswith("Q")}
_QT_CLASSES.update(QSettings=application.QSettings, QMessageBox=application.QMessageBox,
                   QFileDialog=application.QFileDialog, QFile=application.QFile, QDir=application.QDir,
                   QStandardPaths=application.QStandardPaths, QFileInfo=application.QFileInfo,
                   QUiLoader=uiloader.QUiLoader)
_NO_HEADER_CTK = ("ctkCheckablePushButton", "ctkSliderWidget", "ctkDoubleSlider", "ctkDoubleSpinBox",
                  "ctkRangeWidget", "ctkDoubleRangeSlider", "ctkColorPickerButton", "ctkSearchBox",
                  "ctkMenuButton", "ctkFittedTextBrowser", "ctkExpandableWidget")
_NO_HEADER_SLICER = ("qMRMLSliderWidget", "qMRMLSpinBox", "qMRMLRangeWidget", "qMRMLSubjectHierarchyTreeView",
                     "qMRMLSegmentsTableView", "qMRMLSegmentSelectorWidget")


def _make_qt_module():
    mod = types.ModuleType("qt", "Stand-in for PythonQt's qt module (slicer_conformance).")
    generated = {}

    def __getattr__(name):
        if name.startswith("_"):
            raise AttributeError(name)
        if name in generated:
            return generated[name]
        if name == "Qt":
            class _QtNamespace:
                def __getattr__(self, member):
                    return qtapi.qt_enum_value("Qt", member)
            generated[name] = _QtNamespace()
            return generated[name]
        try:
            pyside = qtapi._pyside_class(name)
        except KeyError:
            raise AttributeError(f"module 'qt' has no attribute '{name}'") from None
        from PySide6.QtCore import QObject as _PQObject
        from PySide6.QtWidgets import QWidget as _PQWidget
        if isinstance(pyside, type) and issubclass(pyside, _PQWidget):
            cls = widgets.plain(name, widgets.QWidget, ("qt", name))
        elif isinstance(pyside, type) and issubclass(pyside, _PQObject):
            cls = widgets.plain(name, widgets.QObject, ("qt", name))
        else:
            cls = type(name, (widgets._Value,), {"_pyside": name})
        generated[name] = cls
        return cls

    for k, v in _QT_CLASSES.items():
        setattr(mod, k, v)
    mod.__getattr__ = __getattr__
    return mod


def _make_ctk_module():
    mod = types.ModuleType("ctk", "Stand-in for CTK's PythonQt module (slicer_conformance).")
    for n in ("ctkCollapsibleButton", "ctkPathLineEdit", "ctkDirectoryButton", "ctkComboBox", "ctkCheckBox"):
        setattr(mod, n, getattr(ctkwidgets, n))
    mod.ctkMessageBox = application.ctkMessageBox
    for n in _NO_HEADER_CTK:
        setattr(mod, n, ctkwidgets.no_header(n))
    return mod


# ----------------------------------------------------------------------------- session
class SlicerSession:
    """Context manager; see the package docstring for the API."""

    def __init__(self, module_dir, work, testing=True, developer_mode=False, *, unemulated="raise",
                 slot_exceptions="raise"):
        self.module_dir = Path(module_dir).resolve()
        self.work = Path(work).resolve()
        self.testing = bool(testing)
        self.developer_mode = bool(developer_mode)
        self.unemulated_policy = unemulated
        self.slot_exceptions_policy = slot_exceptions
        self.settings_dir = self.work / "settings"
        self.temp_dir = self.work / "SlicerTemp"
        self.loop = application.EventLoop()
        self._dialogs = application.Dialogs()
        self.main_window = None
        self.scene = None
        self._modules = {}       # name -> python module
        self._parents = {}       # name -> qSlicerScriptedLoadableModule
        self._instances = {}     # name -> ScriptedLoadableModule instance
        self._widgets = {}       # name -> (parent widget, python widget)
        self._shown = None
        self._scene_events = []
        self._windows_folders = []   # require_windows_names: checked when the session ends
        self._active = False

    # ------------------------------------------------------------------ public API
    @property
    def dialogs(self):
        return self._dialogs.record

    def answer(self, value):
        """Queue the answer to the next question/file dialog (True/False, a button value, a path)."""
        self._dialogs.answers.append(value)

    @property
    def unemulated_calls(self):
        return Hooks.unemulated_calls

    @property
    def slot_errors(self):
        return Hooks.slot_errors

    @property
    def scene_events(self):
        """(event name) list of scene close/import events seen since the session started."""
        return self._scene_events

    def process_events(self):
        self.loop.process_events()

    def require_windows_names(self, folder):
        """Fail the test at the session's end when any file or folder the module wrote below ``folder`` has a name
        Windows refuses (``windows_paths``): the harness runs on Linux, Slicer's users mostly on Windows."""
        self._windows_folders.append(Path(folder))

    def run_until(self, predicate, timeout_s=60.0, interval_s=0.01):
        deadline = time.monotonic() + timeout_s
        while True:
            self.process_events()
            if predicate():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {timeout_s} s")
            time.sleep(interval_s)

    def place_point(self, ras):
        """A click at ``ras`` (world mm) in a slice view: places a point when Slicer is in place mode
        (``markups.place_point``); returns (markups node, control point index)."""
        return markups.place_point(self.scene, ras)

    def place_from_toolbar(self, ras, persistent=False):
        """The Markups toolbar's Place button, then a click at ``ras``: a point in Slicer's ACTIVE place list, in
        whichever module is shown (``markups.place_from_toolbar``)."""
        return markups.place_from_toolbar(self.scene, ras, persistent)

    def load_module(self, name):
        mod = self._import_module_file(name)
        parent = qSlicerScriptedLoadableModule()
        object.__setattr__(parent, "_session", self)
        parent._props.update(name=name, path=str(self.module_dir / f"{name}.py"))
        parent.setObjectName(name)
        instance = getattr(mod, name)(parent)
        self._parents[name], self._instances[name] = parent, instance
        setattr(self.slicer.modules, name.lower(), parent)
        setattr(self.slicer.modules, f"{name}Instance", instance)
        setattr(self.slicer.moduleNames, name, name)
        self.app._module_manager._emit("moduleLoaded", name)
        self.app._emit("startupCompleted")
        return instance

    def show_module(self, name):
        if name not in self._parents:
            raise RuntimeError(f"module {name!r} is not loaded (call load_module first)")
        if self._shown is not None and self._shown != name:
            self.leave_module()
        self._ensure_widget(name)
        self._shown = name
        self._widgets[name][1].enter()
        return self._widgets[name][1]

    def leave_module(self):
        if self._shown is not None:
            name, self._shown = self._shown, None
            self._widgets[name][1].exit()

    def close_scene(self):
        """File > Close Scene: qSlicerMainWindowCore::onFileCloseSceneActionTriggered calls
        ``mrmlScene()->Clear(false)``; the real vtkMRMLScene::Clear invokes StartCloseEvent, removes the nodes and
        invokes EndCloseEvent (``scene_events`` records both)."""
        self.scene.Clear(0)

    def reload_module(self, name, reimport_lib=False):
        """slicer.util.reloadScriptedModule (the reference function) + the C++ parent's reload().
        ``reimport_lib=True`` also drops the module's other packages (e.g. <Name>Lib) from sys.modules
        first; real Slicer does NOT do that."""
        if reimport_lib:
            for key in [k for k, m in sys.modules.items() if self._owned(m) and k != name]:
                del sys.modules[key]
        was_shown = self._shown == name
        if was_shown:
            self._widgets[name][1].exit()
        self._reload_enter = was_shown
        self.slicer.util.reloadScriptedModule(name)
        self._modules[name] = sys.modules[name]
        return self._widgets[name][1]

    # ------------------------------------------------------------------ internals
    def _owned(self, m):
        f = getattr(m, "__file__", None)
        return bool(f) and Path(f).resolve().is_relative_to(self.module_dir)

    def _import_module_file(self, name):
        path = self.module_dir / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
        self._modules[name] = mod
        return mod

    def _ensure_widget(self, name):
        if name in self._widgets:
            return self._widgets[name][0]
        parent = mrmlwidgets.qSlicerScriptedLoadableModuleWidget()
        object.__setattr__(parent, "_session", self)
        parent.setObjectName(f"{name}ModuleWidget")
        parent.setLayout(widgets.QVBoxLayout())
        parent.setMRMLScene(self.scene)
        self._new_python_widget(name, parent)
        return parent

    def _new_python_widget(self, name, parent):
        mod = sys.modules.get(name) or self._modules[name]
        pywidget = getattr(mod, f"{name}Widget")(parent)
        object.__setattr__(parent, "_python_widget", pywidget)
        self._widgets[name] = (parent, pywidget)
        pywidget.setup()
        setattr(self.slicer.modules, f"{name}Widget", pywidget)
        return pywidget

    def _rebuild_widget(self, parent):
        name = next(n for n, (p, _w) in self._widgets.items() if p is parent)
        parent.show()
        pywidget = self._new_python_widget(name, parent)
        if getattr(self, "_reload_enter", False):
            self._reload_enter = False
            pywidget.enter()

    # ------------------------------------------------------------------ environment
    def _build_slicer(self):
        ref = qtapi.reference_dir()
        if not (ref / "slicer" / "util.py").is_file():
            raise FileNotFoundError(f"Slicer reference not found at {ref} (set DIFFUMAMBA_SLICER_REFERENCE)")
        import slicer_core
        site_dir = _site_slicer_dir()
        spec = importlib.util.spec_from_file_location(
            "slicer", ref / "slicer" / "__init__.py", submodule_search_locations=[str(ref / "slicer"), str(site_dir)])
        slicer = importlib.util.module_from_spec(spec)
        sys.modules["slicer"] = slicer
        spec.loader.exec_module(slicer)  # the real __init__: creates slicer.modules / slicer.moduleNames
        for n in dir(slicer_core):
            if not n.startswith("_"):
                setattr(slicer, n, getattr(slicer_core, n))
        for n in ("qMRMLWidget", "qMRMLNodeComboBox", "qMRMLSegmentEditorWidget", "qSlicerMarkupsPlaceWidget",
                  "qSlicerWidget", "qSlicerSegmentEditorEffectFactory", "qSlicerSegmentEditorScriptedEffect"):
            setattr(slicer, n, getattr(mrmlwidgets, n))
        mrmlwidgets.qSlicerSegmentEditorEffectFactory._reset()     # each session is a new application
        for n in _NO_HEADER_SLICER:
            setattr(slicer, n, ctkwidgets.no_header(n))
        slicer.dicomDatabase = None
        return slicer

    def _setup_scene(self, slicer):
        scene = slicer.vtkMRMLScene()
        self.logics = {}
        self.app_logic = None
        for key, cls_name in (("applicationlogic", "vtkSlicerApplicationLogic"), ("colors", "vtkSlicerColorLogic"),
                              ("subjecthierarchy", "vtkSlicerSubjectHierarchyModuleLogic"),
                              ("segmentations", "vtkSlicerSegmentationsModuleLogic"),
                              ("terminologies", "vtkSlicerTerminologiesModuleLogic"),
                              ("volumes", "vtkSlicerVolumesLogic")):
            try:
                logic = getattr(slicer, cls_name)()
                if self.app_logic is not None and hasattr(logic, "SetMRMLApplicationLogic"):
                    logic.SetMRMLApplicationLogic(self.app_logic)
                logic.SetMRMLScene(scene)
            except Exception:  # noqa: BLE001 - keep only the logics that work without the application
                continue
            if key == "applicationlogic":
                self.app_logic = logic
            else:
                self.logics[key] = logic
        # the Markups module is always loaded in Slicer: its logic makes each new point list the active place list
        self.markups_logic = markups.MarkupsLogic(scene)
        for ev in ("StartCloseEvent", "EndCloseEvent", "StartImportEvent", "EndImportEvent"):
            scene.AddObserver(getattr(scene, ev), self._scene_event_recorder(ev))
        return scene

    def _scene_event_recorder(self, name):
        def record(caller, event):
            self._scene_events.append(name)
        return record

    def __enter__(self):
        self._saved_modules = {k: v for k, v in sys.modules.items()
                               if k in ("qt", "ctk") or k == "slicer" or k.startswith("slicer.")}
        self._saved_path = list(sys.path)
        self._saved_hooks = dict(vars(Hooks))
        for k in list(self._saved_modules):
            del sys.modules[k]
        self.work.mkdir(parents=True, exist_ok=True)
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        Hooks.unemulated, Hooks.unemulated_calls = self.unemulated_policy, []
        Hooks.slot_exceptions, Hooks.slot_errors = self.slot_exceptions_policy, []
        Hooks.loop = self.loop
        application.QSettings._store = application.SettingsStore(
            self.settings_dir / "Slicer.json", {"Developer/DeveloperMode": self.developer_mode})
        application.QSettings._store.values["Developer/DeveloperMode"] = self.developer_mode
        application.QMessageBox._dialogs = application.QFileDialog._dialogs = self._dialogs
        application.QStandardPaths._root = self.work / "user"
        sys.modules["qt"] = self.qt = _make_qt_module()
        sys.modules["ctk"] = self.ctk = _make_ctk_module()
        self._active = True
        try:
            self.slicer = slicer = self._build_slicer()
            self.app = application.qSlicerApplication(self)
            slicer.app = self.app
            self._dialogs.cursor = self.app.overrideCursor
            self.scene = slicer.mrmlScene = self._setup_scene(slicer)
            self.modules_ns = slicer.modules
            for key, logic in self.logics.items():
                setattr(slicer.modules, key, _LogicModule(key, logic))
            slicer.modules.dicomPlugins = {}
            self.main_window = widgets.QMainWindow()
            self.main_window.setObjectName("qSlicerMainWindow")
            sys.path.insert(0, str(qtapi.reference_dir() / "Modules" / "Scripted" / "SegmentEditor"))
            sys.path.insert(0, str(self.module_dir))
            import slicer.util  # noqa: F401 - the reference util (first on slicer.__path__)
            import slicer.ScriptedLoadableModule  # noqa: F401
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        if not self._active:
            return False
        try:
            if exc_type is None:  # application exit: modules are unloaded, widgets' cleanup() runs
                self.leave_module()
                for name in list(self._parents):
                    self.app._module_manager._emit("moduleAboutToBeUnloaded", name)
                from .windows_paths import tree_problems
                problems = [p for folder in self._windows_folders for p in tree_problems(folder)]
                if problems:
                    raise AssertionError("file names Windows refuses:\n" + "\n".join(problems))
        finally:
            self._active = False
            if self.scene is not None:  # the application's scene dies with it: no observer may outlive the session
                self.scene.RemoveAllObservers()
            for k in [k for k in sys.modules if k in ("qt", "ctk") or k == "slicer" or k.startswith("slicer.")
                      or k in self._modules or self._owned(sys.modules[k])]:
                del sys.modules[k]
            sys.modules.update(self._saved_modules)
            sys.path[:] = self._saved_path
            for k, v in self._saved_hooks.items():
                if not k.startswith("__"):
                    setattr(Hooks, k, v)
        return False
