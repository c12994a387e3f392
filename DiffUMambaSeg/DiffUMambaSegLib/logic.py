"""The module's logic without Qt: start a run (segment, propagate, DICOM export) as a subprocess of the
``diffumamba`` command line, poll it, cancel it, and bring its result into the scene.

Collaborators are injected (``Services``) so the same logic runs in Slicer (``DiffUMambaSegLogic`` in the module
file gives the application's), from Slicer's Python console, and in the tests. One run at a time; the scene
changes only in ``finish`` after a successful run (a cancelled or failed run leaves it as it was).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Protocol, Sequence

from . import correction, flows, result_writer, rt_study_export
from . import scene as scene_io
from .environment import subprocess_environment
from .runner import CommandRunner, Progress, RunResult

__all__ = ["Services", "Outcome", "ModuleLogic", "EXPORT_FORMATS", "chosen_path", "UNCERTAINTY_COLOR"]

EXPORT_FORMATS = ("seg.nrrd", "nifti", "nrrd", "rtstruct", "rtstruct-slicerrt", "dicom-seg")
UNCERTAINTY_COLOR = "vtkMRMLPETProceduralColorNodePET-Heat"   # built into every scene; 0 (agreement) is black


def chosen_path(path) -> Optional[Path]:
    """A path parameter as the user left it: None when empty (the path widgets read "" back as ``Path('.')``)."""
    return None if path is None or str(path).strip() in ("", ".") else Path(path)


class DicomExportPlugin(Protocol):
    def examineForExport(self, subjectHierarchyItemID: int) -> list: ...

    def export(self, exportables: list) -> str: ...


@dataclass
class Services:
    """What the logic needs from the application."""
    scene: object
    python: Callable[[], str]                        # PythonSlicer
    package: Callable[[], Path]                      # the shipped diffumamba package folder
    ensure_dependencies: Callable[[], bool]          # asks, installs; False when the user declined
    dicom_files: Callable[[object], list] = lambda volume: []      # a volume's DICOM series files
    slicerrt_plugin: Callable[[], Optional[DicomExportPlugin]] = lambda: None


@dataclass
class Outcome:
    segmentation: object = None
    segment_id: str = ""
    report: dict = field(default_factory=dict)
    uncertainty: object = None
    exported: Optional[Path] = None


class ModuleLogic:
    def __init__(self, services: Services):
        super().__init__()      # cooperative: the module's logic also derives from ScriptedLoadableModuleLogic
        self.services = services
        self.correction = correction.ClickCorrection(services.scene, correction.serve_worker(services),
                                                     services.ensure_dependencies)
        self.runner: Optional[CommandRunner] = None
        self.job: Optional[flows.Job] = None
        self.kind = ""
        self.referenceVolume = None
        self._work: Optional[tempfile.TemporaryDirectory] = None

    @property
    def running(self) -> bool:
        return self.runner is not None

    # --- starting --------------------------------------------------------------------------------------------
    def startSegmentation(self, parameters, models: Sequence[Path], onProgress: Callable[[Progress], None],
                          onLog: Callable[[str], None]) -> None:
        models = [Path(m) for m in models if chosen_path(m) is not None]
        if parameters.inputVolume is None:
            raise ValueError("Choose an input CT.")
        if not models:
            raise ValueError("Choose a model: pick one from the model list, or browse to a .safetensors checkpoint.")
        missing = [str(m) for m in models if not m.is_file()]
        if missing:
            raise FileNotFoundError(f"The model file {missing[0]} does not exist: choose the model again.")
        self._prepare()
        self.job = flows.prepare_segmentation(parameters.inputVolume, models, self._workFolder(), parameters.device,
                                              self.services.python(), uncertainty=parameters.showUncertainty)
        self._start("segmentation", parameters.inputVolume, onProgress, onLog)

    def startPropagation(self, parameters, onProgress, onLog) -> None:
        if None in (parameters.priorVolume, parameters.priorSegmentation, parameters.currentVolume):
            raise ValueError("Choose the prior CT, the prior GTV and the current CT.")
        model = chosen_path(parameters.propagationModelPath)
        if model is not None and not model.is_file():
            raise FileNotFoundError(f"The propagation model {model} does not exist: choose it again, or clear the "
                                    "field to propagate by registration only.")
        self._prepare()
        self.job = flows.prepare_propagation(self.services.scene, parameters.priorVolume,
                                             parameters.priorSegmentation, parameters.currentVolume,
                                             self._workFolder(), [model] if model else [],
                                             device=parameters.device, python=self.services.python())
        self._start("propagation", parameters.currentVolume, onProgress, onLog)

    def export(self, parameters, folder: Path, onProgress, onLog) -> Optional[Path]:
        """Write the segmentation; returns the path when done at once, None when a DICOM export runs in the
        background (its path comes with ``finish``)."""
        segmentation, form = parameters.outputSegmentation, parameters.exportFormat
        if segmentation is None:
            raise ValueError("Choose a segmentation to export.")
        if chosen_path(folder) is None:
            raise ValueError("Choose the folder to export into.")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        name = segmentation.GetName().replace(" ", "_")
        if form == "seg.nrrd":
            return scene_io.write_segmentation(segmentation, folder / f"{name}.seg.nrrd")
        reference = segmentation.GetNodeReference(segmentation.GetReferenceImageGeometryReferenceRole())
        if reference is None:
            raise ValueError("The segmentation has no reference CT to export on.")
        if form in ("nifti", "nrrd"):
            suffix = ".nii.gz" if form == "nifti" else ".nrrd"
            return scene_io.export_labelmap(self.services.scene, segmentation, reference, folder / f"{name}{suffix}")
        if form == "rtstruct-slicerrt":
            plugin = self.services.slicerrt_plugin()
            if plugin is None:
                raise RuntimeError("SlicerRT is not installed: install it from the Extensions Manager, or choose "
                                   "'rtstruct' (this module's own writer).")
            return rt_study_export.export_rt_study(self.services.scene, plugin, segmentation, reference, folder / name)
        if form not in ("rtstruct", "dicom-seg"):
            raise ValueError(f"Unknown export format {form!r}; choose one of {', '.join(EXPORT_FORMATS)}.")
        self._prepare()
        content = segmentation.GetSegmentation()
        names = [content.GetNthSegment(n).GetName() for n in range(content.GetNumberOfSegments())]
        self.job = flows.prepare_dicom_export(self.services.scene, segmentation, reference,
                                              self.services.dicom_files(reference), self._workFolder(), folder,
                                              [form], name, names, python=self.services.python())
        self._start("export", reference, onProgress, onLog)
        return None

    def _prepare(self) -> None:
        if self.running:
            raise RuntimeError("A run is already going: wait for it or cancel it.")
        if not self.services.ensure_dependencies():
            raise RuntimeError("DiffUMambaSeg cannot run without its Python packages.")
        self._work = tempfile.TemporaryDirectory(prefix="DiffUMambaSeg-")

    def _workFolder(self) -> Path:
        return Path(self._work.name)

    def _start(self, kind: str, reference, onProgress, onLog) -> None:
        self.kind, self.referenceVolume = kind, reference
        self.runner = CommandRunner(self.job.command, on_progress=onProgress, on_log=onLog,
                                    env=subprocess_environment(self.services.package()))
        try:
            self.runner.start()
        except OSError:
            self._clear()
            raise

    # --- running ---------------------------------------------------------------------------------------------
    def poll(self) -> Optional[RunResult]:
        return self.runner.poll() if self.runner is not None else None

    def cancel(self) -> None:
        if self.runner is not None:
            self.runner.cancel()

    def wait(self, timeout: float) -> RunResult:
        """Block until the run ends (scripts and the self-test; the panel polls from a timer instead)."""
        return self.runner.wait(timeout=timeout)

    def finish(self, result: RunResult, target=None, saveUndo: Callable[[object], None] = lambda node: None,
               askReplace: Callable[[str], bool] = lambda question: False) -> Outcome:
        """Bring a successful run's result into the scene (``target``: the output segmentation to write into)."""
        try:
            if result.cancelled:
                return Outcome()
            if not result.ok:
                raise RuntimeError(result.error or f"the command failed with exit status {result.returncode}")
            if self.kind == "export":
                if not self.job.result.is_file():
                    raise OSError(f"the export finished without writing {self.job.result}")
                return Outcome(exported=self.job.result)
            if not self.job.result.is_file():
                raise OSError(f"the {self.kind} finished without writing {self.job.result.name}")
            scene, volume = self.services.scene, self.referenceVolume
            segmentation, segment_id = result_writer.write_result(scene, self.job.result, volume, target, "GTV",
                                                                  saveUndo, askReplace)
            outcome = Outcome(segmentation, segment_id)
            if self.kind == "propagation" and self.job.report and self.job.report.is_file():
                import json

                outcome.report = json.loads(self.job.report.read_text())
            if self.job.uncertainty is not None:
                outcome.uncertainty = self._uncertainty(f"{segmentation.GetName()} uncertainty")
            return outcome
        finally:
            self._clear()

    def _uncertainty(self, name: str):
        """The uncertainty map as an in-memory volume (its file lives in the work folder, removed right after:
        no storage node may point there) with a heat colour map, 0 (every member agrees) transparent."""
        node = flows.load_uncertainty(self.services.scene, self.job, name)
        storage = node.GetStorageNode()
        node.SetAndObserveStorageNodeID(None)
        if storage is not None:
            self.services.scene.RemoveNode(storage)
        node.CreateDefaultDisplayNodes()
        display = node.GetDisplayNode()
        display.SetAndObserveColorNodeID(UNCERTAINTY_COLOR)
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(0.0, 1.0)
        display.SetApplyThreshold(True)
        display.SetLowerThreshold(1e-3)
        display.SetUpperThreshold(1.0)
        return node

    def _clear(self) -> None:
        self.runner, self.job = None, None
        if self._work is not None:
            self._work.cleanup()
            self._work = None
