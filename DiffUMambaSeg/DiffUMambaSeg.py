"""DiffUMambaSeg: lung GTV segmentation and prior-visit GTV propagation in 3D Slicer.

A thin client of the ``diffumamba`` command line: the widget binds the ``.ui`` to a parameter node, the
logic runs the command in a subprocess (``DiffUMambaSegLib.runner``) and moves nodes to and from files
(``DiffUMambaSegLib.scene``, ``DiffUMambaSegLib.flows``). Everything but the widget runs without Qt.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated, Optional

import slicer
import vtk
try:
    from slicer.i18n import tr as _
    from slicer.i18n import translate
except ImportError:   # Slicer builds without the i18n helpers: show the English text
    def _(text: str) -> str:
        return text

    def translate(context: str, text: str) -> str:
        return text
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

from DiffUMambaSegLib import flows, rt_study_export
from DiffUMambaSegLib import scene as scene_io
from DiffUMambaSegLib.runner import CommandRunner, Progress


class DiffUMambaSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("DiffUMambaSeg")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["DiffUMambaSeg developers"]
        self.parent.helpText = _("Segment the gross tumour volume of lung cancer in CT with Diff-UMamba, or propagate "
                                 "the GTV of a prior visit onto a follow-up CT; review it in the Segment Editor and "
                                 "export it. Results are AI-generated and must be reviewed by a clinician.")
        self.parent.acknowledgementText = _("Built on PyTorch, MONAI, SimpleITK, pydicom, highdicom and slicerio.")
        slicer.app.connect("startupCompleted()", self._loadTerminology)

    def _loadTerminology(self) -> None:
        """The GTV terminology (primary malignant neoplasm) as a selectable context in the Segment Editor."""
        path = Path(__file__).parent / "Resources" / "DiffUMambaSeg.term.json"
        terminologies = getattr(slicer.modules, "terminologies", None)
        if terminologies is not None and path.is_file():
            terminologies.logic().LoadTerminologyFromFile(str(path))


@parameterNodeWrapper
class DiffUMambaSegParameterNode:
    inputVolume: slicer.vtkMRMLScalarVolumeNode
    modelPath: str = ""
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"
    showUncertainty: bool = False
    priorVolume: slicer.vtkMRMLScalarVolumeNode
    priorSegmentation: slicer.vtkMRMLSegmentationNode
    currentVolume: slicer.vtkMRMLScalarVolumeNode
    propagationModelPath: str = ""
    outputSegmentation: slicer.vtkMRMLSegmentationNode
    exportFormat: Annotated[str, Choice(["seg.nrrd", "nifti", "nrrd", "rtstruct", "rtstruct-slicerrt", "dicom-seg"])] = "seg.nrrd"


class DiffUMambaSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Binds the .ui to the parameter node; Segment/Propagate turn into Cancel while a run is going."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: Optional[DiffUMambaSegLogic] = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._timer = None

    def setup(self) -> None:
        import qt

        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/DiffUMambaSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.ui.segmentEditorWidget.setMRMLSegmentEditorNode(
            slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentEditorNode", "DiffUMambaSeg editor"))
        self.logic = DiffUMambaSegLogic()
        self._timer = qt.QTimer()
        self._timer.setInterval(200)
        self._timer.timeout.connect(self.onPoll)
        self.ui.segmentButton.clicked.connect(self.onSegment)
        self.ui.propagateButton.clicked.connect(self.onPropagate)
        self.ui.exportButton.clicked.connect(self.onExport)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.logic.cancel()
        self.removeObservers()

    def onSceneStartClose(self, caller, event) -> None:
        self.logic.cancel()

    def initializeParameterNode(self) -> None:
        self._parameterNode = self.logic.getParameterNode()
        self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)

    def onSegment(self) -> None:
        self._startOrCancel(self.logic.startSegmentation, self.ui.segmentButton, _("Could not start the segmentation."))

    def onPropagate(self) -> None:
        self._startOrCancel(self.logic.startPropagation, self.ui.propagateButton, _("Could not start the propagation."))

    def _startOrCancel(self, start, button, failure: str) -> None:
        """The run buttons become Cancel while a run is going."""
        if self.logic.running:
            self.logic.cancel()
            return
        with slicer.util.tryWithErrorDisplay(failure, waitCursor=True):
            start(self._parameterNode, self._onProgress, self._onLog)
            self._started(button)

    def onExport(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Export failed."), waitCursor=True):
            path = self.logic.export(self._parameterNode, Path(self.ui.exportDirectoryButton.directory))
            self._onLog(_("Exported {path}").format(path=path))

    def onPoll(self) -> None:
        finished = self.logic.poll()
        if finished is None:
            return
        self._timer.stop()
        self.ui.segmentButton.text, self.ui.propagateButton.text = _("Segment"), _("Propagate")
        with slicer.util.tryWithErrorDisplay(_("The run failed."), waitCursor=True):
            segmentation, report = self.logic.finish(finished)
            if segmentation is not None:
                self._parameterNode.outputSegmentation = segmentation
                self.ui.segmentEditorWidget.setSegmentationNode(segmentation)
                self.ui.segmentEditorWidget.setSourceVolumeNode(self.logic.referenceVolume)
            if report:
                self.ui.propagationReportLabel.text = self.logic.describeReport(report)

    def _started(self, button) -> None:
        button.text = _("Cancel")
        self.ui.progressBar.value = 0
        self._timer.start()

    def _onProgress(self, progress: Progress) -> None:
        self.ui.progressBar.value = int(round(100 * progress.fraction))
        self.ui.progressBar.setFormat(f"{progress.stage} %p%")

    def _onLog(self, line: str) -> None:
        self.ui.logText.appendPlainText(line)


class DiffUMambaSegLogic(ScriptedLoadableModuleLogic):
    """Starts, polls, cancels and finishes runs; usable from the Python console without the widget."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.runner: Optional[CommandRunner] = None
        self.job: Optional[flows.Job] = None
        self.kind = ""
        self.referenceVolume = None
        self._work: Optional[tempfile.TemporaryDirectory] = None

    def getParameterNode(self):
        return DiffUMambaSegParameterNode(super().getParameterNode())

    @property
    def running(self) -> bool:
        return self.runner is not None

    @staticmethod
    def pythonExecutable() -> str:
        """PythonSlicer: Slicer's Python as a plain interpreter, for the subprocess."""
        name = "PythonSlicer.exe" if os.name == "nt" else "PythonSlicer"
        return str(Path(slicer.app.slicerHome) / "bin" / name)

    def ensureDependencies(self) -> bool:
        """Install what is missing, after asking (never at import time)."""
        from DiffUMambaSegLib.install import install_missing
        from DiffUMambaSegLib.slicer_installer import SlicerInstaller, torch_version

        return install_missing(SlicerInstaller(), str(self.diffumambaSource()), torch_version())

    def diffumambaSource(self) -> Path:
        """The ``diffumamba`` package shipped inside the extension (the source tree's ``Training/`` in a checkout)."""
        module = Path(__file__).resolve().parent
        for candidate in (module / "Resources" / "Training", module.parent / "Training"):
            if (candidate / "pyproject.toml").is_file():
                return candidate
        raise FileNotFoundError(_("The diffumamba package is missing from this extension."))

    def startSegmentation(self, parameters, onProgress, onLog) -> None:
        if not self.ensureDependencies():
            raise RuntimeError(_("DiffUMambaSeg cannot run without its Python packages."))
        if parameters.inputVolume is None:
            raise ValueError(_("Choose an input CT."))
        self._newWork()
        self.job = flows.prepare_segmentation(parameters.inputVolume, [Path(parameters.modelPath)],
                                              Path(self._work.name), parameters.device, self.pythonExecutable(),
                                              uncertainty=parameters.showUncertainty)
        self.kind, self.referenceVolume = "segmentation", parameters.inputVolume
        self._start(onProgress, onLog)

    def startPropagation(self, parameters, onProgress, onLog) -> None:
        if not self.ensureDependencies():
            raise RuntimeError(_("DiffUMambaSeg cannot run without its Python packages."))
        if None in (parameters.priorVolume, parameters.priorSegmentation, parameters.currentVolume):
            raise ValueError(_("Choose the prior CT, the prior GTV and the current CT."))
        self._newWork()
        models = [Path(parameters.propagationModelPath)] if parameters.propagationModelPath else []
        self.job = flows.prepare_propagation(slicer.mrmlScene, parameters.priorVolume, parameters.priorSegmentation,
                                             parameters.currentVolume, Path(self._work.name), models,
                                             device=parameters.device, python=self.pythonExecutable())
        self.kind, self.referenceVolume = "propagation", parameters.currentVolume
        self._start(onProgress, onLog)

    def _newWork(self) -> None:
        if self.running:
            raise RuntimeError(_("A run is already going."))
        self._work = tempfile.TemporaryDirectory(prefix="DiffUMambaSeg-")

    def _start(self, onProgress, onLog) -> None:
        self.runner = CommandRunner(self.job.command, on_progress=onProgress, on_log=onLog)
        self.runner.start()

    def poll(self):
        return self.runner.poll() if self.runner is not None else None

    def cancel(self) -> None:
        if self.runner is not None:
            self.runner.cancel()

    def finish(self, result):
        """Import the result (only after success: a cancelled or failed run leaves the scene unchanged)."""
        try:
            if result.cancelled:
                return None, {}
            if not result.ok:
                raise RuntimeError(result.error or _("the command failed with exit status {code}").format(
                    code=result.returncode))
            slicer.mrmlScene.SaveStateForUndo()
            if self.kind == "segmentation":
                segmentation = flows.finish_segmentation(slicer.mrmlScene, self.job, self.referenceVolume)
                uncertainty = flows.load_uncertainty(slicer.mrmlScene, self.job, f"{segmentation.GetName()} uncertainty")
                if uncertainty is not None:
                    slicer.util.setSliceViewerLayers(foreground=uncertainty, foregroundOpacity=0.4)
                return segmentation, {}
            return flows.finish_propagation(slicer.mrmlScene, self.job, self.referenceVolume)
        finally:
            self.runner, self.job = None, None
            if self._work is not None:
                self._work.cleanup()
                self._work = None

    @staticmethod
    def dicomFiles(volume) -> list:
        """The files of the DICOM series a volume was loaded from (Slicer's DICOM database)."""
        uids = (volume.GetAttribute("DICOM.instanceUIDs") or "").split()
        return [Path(slicer.dicomDatabase.fileForInstance(uid)) for uid in uids if slicer.dicomDatabase]

    @staticmethod
    def describeReport(report: dict) -> str:
        change = report.get("volume_change_percent")
        return _("Prior {prior:.1f} ml, current {current:.1f} ml ({change}); Dice registered prior vs result {dice:.2f}").format(
            prior=report["prior_volume_ml"], current=report["current_volume_ml"],
            change="n/a" if change is None else f"{change:+.1f} %", dice=report["dice_registered_prior_vs_result"])

    def export(self, parameters, folder: Path) -> Path:
        segmentation = parameters.outputSegmentation
        if segmentation is None:
            raise ValueError(_("Choose a segmentation to export."))
        reference = segmentation.GetNodeReference(segmentation.GetReferenceImageGeometryReferenceRole())
        name = segmentation.GetName().replace(" ", "_")
        if parameters.exportFormat == "seg.nrrd":
            path = folder / f"{name}.seg.nrrd"
            if not slicer.util.saveNode(segmentation, str(path)):
                raise OSError(f"could not write {path}")
            return path
        if reference is None:
            raise ValueError(_("The segmentation has no reference CT to export on."))
        if parameters.exportFormat == "rtstruct-slicerrt":
            plugin = rt_study_export.slicerrt_plugin(getattr(slicer.modules, "dicomPlugins", None))
            if plugin is None:
                raise RuntimeError(_("SlicerRT is not installed: choose 'rtstruct' (this module's writer) instead."))
            return rt_study_export.export_rt_study(slicer.mrmlScene, plugin, segmentation, reference, folder / name)
        if parameters.exportFormat in ("rtstruct", "dicom-seg"):
            with tempfile.TemporaryDirectory(prefix="DiffUMambaSeg-export-") as work:
                job = flows.prepare_dicom_export(slicer.mrmlScene, segmentation, reference, self.dicomFiles(reference),
                                                 Path(work), folder, [parameters.exportFormat], name,
                                                 python=self.pythonExecutable())
                runner = CommandRunner(job.command)
                runner.start()
                result = runner.wait(timeout=600)
                if not result.ok:
                    raise RuntimeError(result.error or _("the export failed"))
            return job.result
        suffix = ".nii.gz" if parameters.exportFormat == "nifti" else ".nrrd"
        return scene_io.export_labelmap(slicer.mrmlScene, segmentation, reference, folder / f"{name}{suffix}")


class DiffUMambaSegTest(ScriptedLoadableModuleTest):
    """Both flows on Slicer's CTChest sample: segmentation with a tiny model trained for two iterations on the
    package's phantoms (no download: its output is not meaningful, the test checks the flow), and
    registration-only propagation."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_segmentation_tiny_model()
        self.setUp()
        self.test_propagation_registration_only()

    def test_segmentation_tiny_model(self):
        import SampleData

        ct = SampleData.SampleDataLogic().downloadSample("CTChest")
        logic = DiffUMambaSegLogic()
        self.assertTrue(logic.ensureDependencies())
        with tempfile.TemporaryDirectory(prefix="DiffUMambaSegTest-") as work:
            demo = CommandRunner(flows.diffumamba_command(logic.pythonExecutable()) +
                                 ["demo", "--out", work, "--epochs", "1", "--iterations", "2"], on_log=print)
            demo.start()
            self.assertTrue(demo.wait(timeout=900).ok)
            parameters = logic.getParameterNode()
            parameters.inputVolume, parameters.modelPath, parameters.device = ct, str(Path(work, "run", "last.safetensors")), "cpu"
            logic.startSegmentation(parameters, lambda progress: None, print)
            segmentation, _report = logic.finish(logic.runner.wait(timeout=1800))
        self.assertIsNotNone(segmentation)
        self.assertEqual(segmentation.GetSegmentation().GetNthSegment(0).GetName(), "GTV")
        self.assertEqual(segmentation.GetNodeReference(segmentation.GetReferenceImageGeometryReferenceRole()), ct)
        self.delayDisplay("DiffUMambaSeg segmentation test passed")

    def test_propagation_registration_only(self):
        import SampleData

        ct = SampleData.SampleDataLogic().downloadSample("CTChest")
        segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "prior")
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(ct)
        sphere = vtk.vtkSphereSource()
        sphere.SetCenter(_centre(ct))
        sphere.SetRadius(15)
        sphere.Update()
        segmentation.AddSegmentFromClosedSurfaceRepresentation(sphere.GetOutput(), "GTV", [1, 0, 0])
        logic = DiffUMambaSegLogic()
        parameters = logic.getParameterNode()
        parameters.priorVolume, parameters.priorSegmentation, parameters.currentVolume = ct, segmentation, ct
        self.assertTrue(logic.ensureDependencies())
        logic.startPropagation(parameters, lambda progress: None, print)
        result = logic.runner.wait(timeout=600)
        propagated, report = logic.finish(result)
        self.assertIsNotNone(propagated)
        self.assertGreater(report["dice_registered_prior_vs_result"], 0.99)
        self.assertAlmostEqual(report["current_volume_ml"], report["prior_volume_ml"], delta=0.1 * report["prior_volume_ml"])
        self.delayDisplay("DiffUMambaSeg propagation test passed")


def _centre(volume) -> list:
    bounds = [0.0] * 6
    volume.GetRASBounds(bounds)
    return [(bounds[2 * i] + bounds[2 * i + 1]) / 2 for i in range(3)]
