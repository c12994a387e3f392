"""DiffUMambaSeg: lung GTV segmentation and prior-visit GTV propagation in 3D Slicer.

A thin client of the ``diffumamba`` command line shipped with the extension: this file wires Slicer to
``DiffUMambaSegLib`` (``logic``: runs in a subprocess; ``panel``: the buttons; ``editor``: the embedded Segment
Editor; ``correction_panel``: corrections with include/exclude clicks; ``self_test``: the in-Slicer test), which
holds everything else.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import qt
import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

if slicer.util.settingsValue("Developer/DeveloperMode", False, converter=slicer.util.toBool):
    # Reload re-executes only this file (slicer.util.reloadScriptedModule, util.py:1578-1611); in developer mode the
    # Lib is imported afresh too, so "Reload" and "Reload and Test" run the edited Lib files.
    for _name in [n for n in sys.modules if n == "DiffUMambaSegLib" or n.startswith("DiffUMambaSegLib.")]:
        del sys.modules[_name]

from DiffUMambaSegLib import dicom_database, environment, install, logic, path_fields, rt_study_export
from DiffUMambaSegLib.correction_panel import CorrectionPanel
from DiffUMambaSegLib.editor import EmbeddedEditor
from DiffUMambaSegLib.panel import Panel, ask, noWaitCursor

MODULE_DIR = Path(__file__).resolve().parent


class DiffUMambaSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("DiffUMambaSeg")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["Segmentations", "Markups", "SubjectHierarchy", "Terminologies"]
        self.parent.contributors = ["DiffUMambaSeg developers (DiffUMambaSeg project)"]
        self.parent.helpText = _("Segment the gross tumour volume of lung cancer in CT with Diff-UMamba, or propagate "
                                 "the GTV of a prior visit onto a follow-up CT; review it in the Segment Editor and "
                                 "export it. Results are AI-generated and must be reviewed by a clinician. The shipped "
                                 "models are research models, not for clinical use. See the <a href=\""
                                 "https://github.com/DiffUMambaSeg/SlicerDiffUMambaSeg/blob/main/docs/slicer.md\">"
                                 "module documentation</a>.")
        self.parent.acknowledgementText = _("Built on PyTorch, MONAI, SimpleITK, pydicom, highdicom and slicerio.")
        slicer.app.connect("startupCompleted()", self.loadTerminology)

    def loadTerminology(self) -> None:
        """The GTV terminology (primary malignant neoplasm) as a selectable context in the Segment Editor."""
        terminologies = getattr(slicer.modules, "terminologies", None)
        if terminologies is not None:
            terminologies.logic().LoadTerminologyFromFile(str(MODULE_DIR / "Resources" / "DiffUMambaSeg.term.json"))


@parameterNodeWrapper
class DiffUMambaSegParameterNode:
    inputVolume: slicer.vtkMRMLScalarVolumeNode
    modelPath: Path                          # a checkpoint or zip, when no catalog model is chosen
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"
    showUncertainty: bool = False
    priorVolume: slicer.vtkMRMLScalarVolumeNode
    priorSegmentation: slicer.vtkMRMLSegmentationNode
    currentVolume: slicer.vtkMRMLScalarVolumeNode
    propagationModelPath: Path               # empty: registration only
    outputSegmentation: slicer.vtkMRMLSegmentationNode
    exportFormat: Annotated[str, Choice(list(logic.EXPORT_FORMATS))] = "seg.nrrd"
    exportFolder: Path
    correctionModelPath: Path                # when no catalog click model is chosen (train --task correction)
    includePoints: slicer.vtkMRMLMarkupsFiducialNode
    excludePoints: slicer.vtkMRMLMarkupsFiducialNode


class DiffUMambaSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = self.panel = self.editor = self.correction = self._parameterNode = self._guiTag = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/DiffUMambaSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        self.editor = EmbeddedEditor(self.ui.segmentEditorWidget, slicer.mrmlScene,
                                     slicer.qSlicerSegmentEditorEffectFactory.instance())
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = DiffUMambaSegLogic()
        self.panel = Panel(self.ui, self.logic, self.editor, None, MODULE_DIR / "Resources" / "Models.json",
                           onResult=lambda: self.correction.restart())
        self.correction = CorrectionPanel(self.ui, self.logic.correction, self.editor, qt.QTimer(), slicer.mrmlScene,
                                          self.panel.entries, self.panel.cache,   # the catalog's click models
                                          defer=lambda function: qt.QTimer.singleShot(0, function),  # after the click
                                          acknowledge=self.panel.acknowledge)      # a research click model: asked once
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        path_fields.connectPathFields(slicer.util.findChildren(uiWidget, className="ctkPathLineEdit"),
                                      lambda: self._parameterNode)      # clearable, empty when unset
        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self.panel is not None:
            self.panel.cancel()
            self.panel.timer.stop()
            self.correction.stop()
            self.editor.exit()
            self.editor.cleanup()
            self.setParameterNode(None)
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()
        self.editor.enter()
        self.correction.enter()        # clicks count only while the module is shown

    def exit(self) -> None:
        """As the 5.12 template: the GUI stops following the parameter node until the module is shown again. The
        panel keeps its parameters and its run timer, so a run started here goes on and its result still lands."""
        self.correction.exit()
        self.editor.exit()
        if self._parameterNode is not None:
            self._parameterNode.disconnectGui(self._guiTag)
            self._guiTag = None

    def onSceneStartClose(self, caller, event) -> None:
        self.panel.cancel()
        self.correction.stop()
        self.editor.sceneStartClose()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()
        self.editor.sceneEndClose(self.parent.isEntered)

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, parameterNode) -> None:
        if self._parameterNode is not None:
            self._parameterNode.disconnectGui(self._guiTag)
        self._parameterNode, self._guiTag = parameterNode, None
        self.panel.setParameters(parameterNode)
        self.correction.setParameters(parameterNode)
        if parameterNode is not None:
            self._guiTag = parameterNode.connectGui(self.ui)


class DiffUMambaSegLogic(logic.ModuleLogic, ScriptedLoadableModuleLogic):
    """Usable from Slicer's Python console: ``startSegmentation(parameters, models, print, print)``, ``wait``,
    ``finish``; the application's services are injected here."""

    def __init__(self) -> None:
        logic.ModuleLogic.__init__(self, logic.Services(
            scene=slicer.mrmlScene, python=lambda: environment.python_executable(slicer.app.slicerHome),
            package=lambda: environment.package_dir(MODULE_DIR), ensure_dependencies=self.ensureDependencies,
            dicom_files=self.dicomFiles,
            slicerrt_plugin=lambda: rt_study_export.slicerrt_plugin(getattr(slicer.modules, "dicomPlugins", None)),
            confirm=ask, import_dicom=self.importDicom))

    def getParameterNode(self):
        return DiffUMambaSegParameterNode(super().getParameterNode())

    def ensureDependencies(self) -> bool:
        from DiffUMambaSegLib.slicer_installer import SlicerInstaller

        requirements = install.runtime_requirements(MODULE_DIR)        # Resources/requirements.txt
        with noWaitCursor():            # its question and the installer's dialogs, never under a busy cursor
            return install.install_missing(SlicerInstaller(), requirements)

    @staticmethod
    def dicomFiles(volume) -> list:
        """The files of the DICOM series a volume was loaded from (Slicer's DICOM database; raises when any is
        missing there)."""
        return dicom_database.series_files(volume, getattr(slicer, "dicomDatabase", None))

    @staticmethod
    def importDicom(folder: str) -> None:
        """Index an export folder into the DICOM database, as Slicer's DICOM export dialog does."""
        if getattr(slicer, "dicomDatabase", None) is None:
            raise RuntimeError("no DICOM database is open")
        from DICOMLib import DICOMUtils

        DICOMUtils.importDicom(folder)


class DiffUMambaSegTest(ScriptedLoadableModuleTest):
    def runTest(self):
        from DiffUMambaSegLib.self_test import run_self_test

        run_self_test(self, DiffUMambaSegLogic)
