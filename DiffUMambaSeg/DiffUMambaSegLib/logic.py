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

from . import correction, dicom_database, file_names, flows, result_writer, rt_study_export
from . import scene as scene_io
from .environment import subprocess_environment
from .runner import CommandRunner, Progress, RunResult

__all__ = ["Services", "Outcome", "ModuleLogic", "EXPORT_FORMATS", "chosen_path", "UNCERTAINTY_COLOR",
           "UNCERTAINTY_OF"]

EXPORT_FORMATS = ("seg.nrrd", "nifti", "nrrd", "rtstruct", "rtstruct-slicerrt", "dicom-seg")
UNCERTAINTY_COLOR = "vtkMRMLPETProceduralColorNodePET-Heat"   # built into every scene; 0 (agreement) is black
UNCERTAINTY_OF = "DiffUMambaSeg.uncertaintyOf"    # attribute of an uncertainty map: the ID of its CT (one per CT)
PREPARING = "Preparing"                           # the progress stage while the inputs are written


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
    dicom_files: Callable[[object], list] = lambda volume: []      # a volume's DICOM series files (raises if lost)
    slicerrt_plugin: Callable[[], Optional[DicomExportPlugin]] = lambda: None
    confirm: Callable[[str], bool] = lambda question: False        # OK/Cancel: replace files already there?
    import_dicom: Optional[Callable[[str], object]] = None         # adds a folder to the DICOM database


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
        self._log: Callable[[str], None] = lambda line: None     # the running job's log (export: database import)

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
        self._prepare(onProgress)
        self.job = self._guarded(lambda: flows.prepare_segmentation(
            parameters.inputVolume, models, self._workFolder(), parameters.device, self.services.python(),
            uncertainty=parameters.showUncertainty))
        self._start("segmentation", parameters.inputVolume, onProgress, onLog)

    def startPropagation(self, parameters, onProgress, onLog) -> None:
        if None in (parameters.priorVolume, parameters.priorSegmentation, parameters.currentVolume):
            raise ValueError("Choose the prior CT, the prior GTV and the current CT.")
        model = chosen_path(parameters.propagationModelPath)
        if model is not None and not model.is_file():
            raise FileNotFoundError(f"The propagation model {model} does not exist: choose it again, or clear the "
                                    "field to propagate by registration only.")
        self._prepare(onProgress)
        self.job = self._guarded(lambda: flows.prepare_propagation(
            self.services.scene, parameters.priorVolume, parameters.priorSegmentation, parameters.currentVolume,
            self._workFolder(), [model] if model else [], device=parameters.device, python=self.services.python()))
        self._start("propagation", parameters.currentVolume, onProgress, onLog)

    def export(self, parameters, folder: Path, onProgress, onLog) -> Optional[Path]:
        """Write the segmentation; returns the path when done at once, None when a DICOM export runs in the
        background (its path comes with ``finish``).

        Files are named ``<patient>_<study date>_<segmentation>`` (``file_names.export_stem``: valid on every OS,
        never a node name as it is) and a file already there is replaced only when the user agrees
        (``Services.confirm``). Every segment is exported with all its voxels, by segment ID: DICOM gets one ROI
        or SEG segment per segment; a NIfTI/NRRD label map holds one value per voxel, so when segments overlap
        each segment is written to its own file (``<stem>_<segment>``) and the log says so."""
        segmentation, form = parameters.outputSegmentation, parameters.exportFormat
        if segmentation is None:
            raise ValueError("Choose a segmentation to export.")
        if chosen_path(folder) is None:
            raise ValueError("Choose the folder to export into.")
        if form not in EXPORT_FORMATS:
            raise ValueError(f"Unknown export format {form!r}; choose one of {', '.join(EXPORT_FORMATS)}.")
        folder, scene = Path(folder), self.services.scene
        reference = self._exportReference(segmentation, parameters, onLog)
        stem = file_names.export_stem(self._hierarchy(), segmentation, reference)
        if form == "seg.nrrd":
            path = folder / f"{stem}.seg.nrrd"
            file_names.confirm_overwrite([path], self.services.confirm)
            folder.mkdir(parents=True, exist_ok=True)
            return scene_io.write_segmentation(segmentation, path)
        if reference is None:
            raise ValueError(f"{segmentation.GetName()} has no reference CT to export on: show it in the Segment "
                             "Editor below with its CT as the source volume, or choose the CT as the input CT.")
        if form in ("nifti", "nrrd"):
            return self._exportLabelmaps(segmentation, reference, folder, stem, form, onLog)
        if form == "rtstruct-slicerrt":
            plugin = self.services.slicerrt_plugin()
            if plugin is None:
                raise RuntimeError("SlicerRT is not installed: install it from the Extensions Manager, or choose "
                                   "'rtstruct' (this module's own writer).")
            study = folder / stem
            earlier = sorted(study.glob("*.dcm")) if study.is_dir() else []
            if earlier:           # SlicerRT names files by UID: replacing means removing the earlier study's files
                file_names.confirm_overwrite([study], self.services.confirm)
                for path in earlier:
                    path.unlink()
            written = rt_study_export.export_rt_study(scene, plugin, segmentation, reference, study)
            dicom_database.import_files([written], self.services.import_dicom, onLog)
            return written
        file_names.confirm_overwrite(flows.dicom_export_paths(folder, stem, [form]), self.services.confirm)
        dicom_files = self.services.dicom_files(reference)      # raises when the series is not in the database
        self._prepare(onProgress)
        self.job = self._guarded(lambda: flows.prepare_dicom_export(
            scene, segmentation, reference, dicom_files, self._workFolder(), folder, [form], stem,
            python=self.services.python()))
        self._start("export", reference, onProgress, onLog)
        return None

    def _exportLabelmaps(self, segmentation, reference, folder: Path, stem: str, form: str, onLog) -> Path:
        scene, suffix = self.services.scene, ".nii.gz" if form == "nifti" else ".nrrd"
        ids = scene_io.segment_ids(segmentation)
        if not scene_io.overlapping_segments(scene, segmentation, reference, ids):
            path = folder / f"{stem}{suffix}"
            file_names.confirm_overwrite([path], self.services.confirm)
            folder.mkdir(parents=True, exist_ok=True)
            return scene_io.export_labelmap(scene, segmentation, reference, path, ids=ids)
        content, paths, used = segmentation.GetSegmentation(), [], set()
        for segment_id in ids:
            part = file_names.valid_file_name(content.GetSegment(segment_id).GetName(), "segment", 60)
            number, name = 2, part
            while name.casefold() in used:            # two segments of the same name: both are written
                name, number = f"{part}_{number}", number + 1
            used.add(name.casefold())
            paths.append(folder / f"{stem}_{name}{suffix}")
        file_names.confirm_overwrite(paths, self.services.confirm)
        folder.mkdir(parents=True, exist_ok=True)
        onLog(f"The segments of {segmentation.GetName()} overlap and one label map holds one value per voxel: "
              f"each segment is written to its own file (value 1), so none loses voxels.")
        for segment_id, path in zip(ids, paths):
            scene_io.export_labelmap(scene, segmentation, reference, path, ids=[segment_id])
        for path in paths[1:]:
            onLog(f"Exported {path}")
        return paths[0]

    def _exportReference(self, segmentation, parameters, onLog):
        """The CT the segmentation is exported on: its reference geometry node; for a segmentation without one
        (loaded from a .seg.nrrd) the Segment Editor's source volume when the editor shows this segmentation,
        else the input CT, and the log says which."""
        reference = segmentation.GetNodeReference(segmentation.GetReferenceImageGeometryReferenceRole())
        if reference is not None:
            return reference
        editor = self.services.scene.GetSingletonNode("SegmentEditor", "vtkMRMLSegmentEditorNode")
        source, why = None, ""
        if editor is not None and editor.GetSegmentationNode() is segmentation:
            source, why = editor.GetSourceVolumeNode(), "the Segment Editor's source volume"
        if source is None and getattr(parameters, "inputVolume", None) is not None:
            source, why = parameters.inputVolume, "the input CT"
        if source is not None:
            onLog(f"{segmentation.GetName()} has no reference CT: it is exported on {source.GetName()} ({why}).")
        return source

    def _hierarchy(self):
        import slicer

        return slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(self.services.scene)

    def _prepare(self, onProgress: Callable[[Progress], None] = lambda progress: None) -> None:
        if self.running:
            raise RuntimeError("A run is already going: wait for it or cancel it.")
        if not self.services.ensure_dependencies():
            raise RuntimeError("DiffUMambaSeg cannot run without its Python packages.")
        self._work = tempfile.TemporaryDirectory(prefix="DiffUMambaSeg-")
        onProgress(Progress(PREPARING, 0.0, "writing the inputs"))

    def _guarded(self, prepare):
        """``prepare()``'s job; the work folder is removed when it fails (nothing runs, nothing is left)."""
        try:
            return prepare()
        except BaseException:
            self._clear()
            raise

    def _workFolder(self) -> Path:
        return Path(self._work.name)

    def _start(self, kind: str, reference, onProgress, onLog) -> None:
        self.kind, self.referenceVolume, self._log = kind, reference, onLog
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
                dicom_database.import_files([self.job.result.parent], self.services.import_dicom, self._log)
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
                outcome.uncertainty = self._uncertainty(f"{volume.GetName()} uncertainty", volume)
            return outcome
        finally:
            self._clear()

    def _uncertainty(self, name: str, volume):
        """The uncertainty map as an in-memory volume (its file lives in the work folder, removed right after:
        no storage node may point there) with a heat colour map, 0 (every member agrees) transparent. One map per
        CT: a later run replaces the earlier map's voxels (the node, its colours and its place stay); it sits in
        the CT's study and under the CT's transform, like the GTV."""
        scene = self.services.scene
        if not self.job.uncertainty.is_file():
            raise OSError(f"the segmentation finished without writing {self.job.uncertainty.name}")
        node = scene_io.read_detached(self.job.uncertainty, name)       # in no scene until kept: no flash
        earlier = self._earlierUncertainty(volume)
        if earlier is not None:
            import vtk

            matrix = vtk.vtkMatrix4x4()
            node.GetIJKToRASMatrix(matrix)
            earlier.SetIJKToRASMatrix(matrix)
            earlier.SetAndObserveImageData(node.GetImageData())
            return earlier
        node.SetAttribute(UNCERTAINTY_OF, volume.GetID())
        scene.AddNode(node)
        scene_io.follow_transform(node, volume)
        scene_io.place_beside(scene, node, volume)
        node.CreateDefaultDisplayNodes()
        display = node.GetDisplayNode()
        display.SetAndObserveColorNodeID(UNCERTAINTY_COLOR)
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(0.0, 1.0)
        display.SetApplyThreshold(True)
        display.SetLowerThreshold(1e-3)
        display.SetUpperThreshold(1.0)
        return node

    def _earlierUncertainty(self, volume):
        scene = self.services.scene
        for index in range(scene.GetNumberOfNodes()):
            node = scene.GetNthNode(index)
            if node.IsA("vtkMRMLScalarVolumeNode") and node.GetAttribute(UNCERTAINTY_OF) == volume.GetID():
                return node
        return None

    def _clear(self) -> None:
        self.runner, self.job = None, None
        if self._work is not None:
            self._work.cleanup()
            self._work = None
