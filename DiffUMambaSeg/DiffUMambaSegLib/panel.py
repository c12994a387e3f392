"""The module panel's behaviour: buttons, the model list, progress, and what the user sees while a run goes.

The only file of the Lib package that touches Qt (a ``QTimer`` to poll runs and downloads, ``QSettings`` to
remember the export folder and the research models the user acknowledged); the widgets come from the ``.ui``
through ``ui``. One task at a time: while a download, run or export goes, its button reads Cancel and the other
two are disabled (clicking another run button must never cancel the current one). Every scene change happens in
``_finish`` after a success; however a run ends (finished, failed, cancelled, scene closed) ``_finish`` hands its
result to ``logic.finish``, which always clears the run, so the next one can start.

Research models: a catalog entry marked research-only (``catalog.ModelEntry.research_only``) is never selected by
default, needs a one-time acknowledgement before its first run, and its result segment carries the tag
``RESEARCH_TAG`` ("not for clinical use"), which a ``.seg.nrrd`` keeps. Questions are never asked under the wait
cursor (``ask``).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Optional

import qt
import slicer

from . import catalog, result_check
from .model_cache import ModelCache
from .logic import chosen_path
from .model_download import DownloadJob

__all__ = ["Panel", "EXPORT_FOLDER_KEY", "ACKNOWLEDGED_KEY", "RESEARCH_TAG", "ask", "noWaitCursor"]

EXPORT_FOLDER_KEY = "DiffUMambaSeg/ExportFolder"
ACKNOWLEDGED_KEY = "DiffUMambaSeg/AcknowledgedResearchModels"   # "id@version" of each research model acknowledged
RESEARCH_TAG = "DiffUMambaSeg.NotForClinicalUse"                 # segment tag on a research model's result
CHECKPOINT_ITEM = ""          # the model list's last item: the checkpoint or zip in the path field
CHOOSE_ITEM = "choose"        # the model list's first item when no model may be pre-selected


def _(text: str) -> str:
    try:
        from slicer.i18n import tr
    except ImportError:
        return text
    return tr(text)


@contextlib.contextmanager
def noWaitCursor():
    """No override cursor inside the block (they are put back after): a question or the installer's dialogs
    under ``tryWithErrorDisplay(waitCursor=True)`` would otherwise show a busy cursor over their buttons
    (slicer/util.py:3570-3580 holds the wait cursor for the whole block)."""
    app, saved = slicer.app, []
    while app.overrideCursor() is not None and len(saved) < 32:
        saved.append(app.overrideCursor())
        app.restoreOverrideCursor()
    try:
        yield
    finally:
        for cursor in reversed(saved):
            app.setOverrideCursor(cursor)


def ask(question: str) -> bool:
    """An OK/Cancel question, never under the wait cursor."""
    with noWaitCursor():
        return bool(slicer.util.confirmOkCancelDisplay(question, "DiffUMambaSeg"))


class Panel:
    def __init__(self, ui, logic, editor, parameters, catalogPath: Path, cache: Optional[ModelCache] = None,
                 onResult: Callable[[], None] = lambda: None):
        self.ui, self.logic, self.editor, self.parameters = ui, logic, editor, parameters
        self.onResult = onResult          # a new GTV is in the editor (the click corrections start afresh)
        self.runEntry: Optional[catalog.ModelEntry] = None     # the catalog model of the run going, if any
        self.cache = cache or ModelCache()
        self.entries, problem = [], ""
        try:
            self.entries = catalog.load_catalog(catalogPath) if Path(catalogPath).is_file() else []
        except catalog.CatalogError as error:      # a broken catalog must not keep the module from loading
            problem = str(error)
        self.download: Optional[DownloadJob] = None
        self.busyButton = None
        self._pending = None          # what to start once the download is done
        self.timer = qt.QTimer()
        self.timer.setInterval(200)
        self.timer.timeout.connect(self.onPoll)
        self.buttons = {"segment": ui.segmentButton, "propagate": ui.propagateButton, "export": ui.exportButton}
        self.labels = {"segment": _("Segment"), "propagate": _("Propagate"), "export": _("Export")}
        ui.segmentButton.clicked.connect(lambda: self._startOrCancel("segment", self._segment))
        ui.propagateButton.clicked.connect(lambda: self._startOrCancel("propagate", self._propagate))
        ui.exportButton.clicked.connect(lambda: self._startOrCancel("export", self._export))
        self._fillModels()
        ui.modelComboBox.currentIndexChanged.connect(self.onModelChanged)
        self.onModelChanged()
        if problem:
            self.onLog(_("The model catalog could not be read: {problem}").format(problem=problem))

    # --- parameter node -------------------------------------------------------------------------------------
    def setParameters(self, parameters) -> None:
        self.parameters = parameters
        if parameters is not None and chosen_path(parameters.exportFolder) is None:
            parameters.exportFolder = Path(self.defaultExportFolder())

    @staticmethod
    def defaultExportFolder() -> str:
        """The last folder exported into; else Slicer's default save folder; else the user's documents (never
        the working directory, which is / when Slicer is started from the macOS Finder)."""
        remembered = qt.QSettings().value(EXPORT_FOLDER_KEY, "")
        if remembered and Path(remembered).is_dir():
            return str(remembered)
        scenes = slicer.app.defaultScenePath
        if scenes and Path(scenes).is_dir():
            return str(scenes)
        return qt.QStandardPaths.writableLocation(qt.QStandardPaths.DocumentsLocation)

    # --- models ---------------------------------------------------------------------------------------------
    def _fillModels(self) -> None:
        """The catalog's segmentation models (the default first), then "Checkpoint or zip". When the default is a
        research model (not for clinical use) nothing is pre-selected: the list starts on "Choose a model", so
        using a research model is always the user's explicit choice."""
        combo = self.ui.modelComboBox
        combo.clear()
        entries = catalog.for_task(self.entries, "segmentation")
        if entries and entries[0].research_only:
            combo.addItem(_("Choose a model"), CHOOSE_ITEM)
        for entry in entries:
            combo.addItem(f"{entry.name} {entry.version}", f"{entry.id}@{entry.version}")
        combo.addItem(_("Checkpoint or zip (choose below)"), CHECKPOINT_ITEM)
        combo.currentIndex = 0

    def _chooseSelected(self) -> bool:
        return self.ui.modelComboBox.itemData(self.ui.modelComboBox.currentIndex) == CHOOSE_ITEM

    def selectedEntry(self) -> Optional[catalog.ModelEntry]:
        key = self.ui.modelComboBox.itemData(self.ui.modelComboBox.currentIndex)
        return next((e for e in self.entries if f"{e.id}@{e.version}" == key), None)

    def onModelChanged(self, index=None) -> None:
        entry = self.selectedEntry()
        self.ui.modelPathLineEdit.enabled = entry is None and not self._chooseSelected()
        if entry is not None:
            self.ui.modelInfoLabel.text = catalog.describe(entry, self.cache)
        elif self._chooseSelected():
            self.ui.modelInfoLabel.text = _("Choose a model from the list. The models listed are research models, "
                                            "not for clinical use: each says what it was trained on and how "
                                            "accurate it is.")
        else:
            self.ui.modelInfoLabel.text = _("A Diff-UMamba checkpoint (.safetensors) trained with diffumamba train, "
                                            "or a model package .zip written by diffumamba package (an ensemble); "
                                            "a package is verified against its manifest and copied into the model "
                                            "cache on first use.")

    def _localModels(self) -> list:
        path = None if self._chooseSelected() else chosen_path(self.parameters.modelPath)
        if path is None:
            raise ValueError(_("Choose a model: pick one from the model list, or browse to a .safetensors "
                               "checkpoint or a model package .zip."))
        if path.suffix.lower() == ".zip":
            return self.cache.import_local(path)
        return [path]

    # --- research models ------------------------------------------------------------------------------------
    @staticmethod
    def _acknowledged() -> list:
        value = qt.QSettings().value(ACKNOWLEDGED_KEY, [])
        return [value] if isinstance(value, str) else list(value or [])

    def acknowledge(self, entry: catalog.ModelEntry) -> bool:
        """True when ``entry`` may run: a clinical model, or a research model the user acknowledged (asked once,
        remembered in the settings per model and version)."""
        key = f"{entry.id}@{entry.version}"
        if not entry.research_only or key in self._acknowledged():
            return True
        question = _("{name} {version} is a research model, NOT FOR CLINICAL USE.\n\n{use}\n\nIts contours must "
                     "not be used for diagnosis or treatment planning without being redrawn or corrected by a "
                     "clinician; its results are tagged \"not for clinical use\". Use it?").format(
            name=entry.name, version=entry.version, use=entry.intended_use or entry.description)
        if not ask(question):
            return False
        qt.QSettings().setValue(ACKNOWLEDGED_KEY, self._acknowledged() + [key])
        return True

    def _markResearchResult(self, segmentation, segmentId: str) -> None:
        """A research model's result says so in the segment itself (a tag a .seg.nrrd keeps); a later result of
        another model in the same segment drops it."""
        segment = segmentation.GetSegmentation().GetSegment(segmentId) if segmentation is not None else None
        if segment is None:
            return
        entry = self.runEntry
        if entry is not None and entry.research_only:
            segment.SetTag(RESEARCH_TAG, f"{entry.name} {entry.version}: research model, not for clinical use")
        else:
            segment.RemoveTag(RESEARCH_TAG)

    def _releaseGpu(self) -> None:
        """The click-correction worker keeps its model on the GPU until it is stopped; a Segment or Propagate run
        on CUDA next to it can run out of GPU memory on a small card, so the worker is stopped first (it restarts
        with the next click). "auto" picks CUDA when there is one, so it counts too; on "cpu" the worker stays."""
        if self.parameters is not None and self.parameters.device != "cpu":
            self.logic.correction.stop()

    # --- starting and cancelling ----------------------------------------------------------------------------
    def _startOrCancel(self, name: str, start) -> None:
        if self.busyButton is not None:
            if self.busyButton is self.buttons[name]:
                self.cancel()
            return
        with slicer.util.tryWithErrorDisplay(_("Could not start."), waitCursor=True):
            if start():             # False: done at once (a file export), nothing to wait for
                self._busy(name)

    def _segment(self) -> bool:
        entry = self.selectedEntry()
        if entry is not None and not self.acknowledge(entry):
            self.onLog(_("Not started: {name} {version} was not acknowledged as a research model.").format(
                name=entry.name, version=entry.version))
            return False
        if entry is not None and not self.cache.is_cached(entry):
            self.download = DownloadJob(self.cache, entry).start()
            self._pending = self._segment
            self.onLog(_("Downloading {name} {version} ...").format(name=entry.name, version=entry.version))
            return True
        models = self.cache.checkpoints(entry) if entry is not None else self._localModels()
        self._releaseGpu()
        self.runEntry = entry
        self.logic.startSegmentation(self.parameters, models, self.onProgress, self.onLog)
        self.ui.segmentResultLabel.text = ""           # the last result's summary no longer applies
        return True

    def _propagate(self) -> bool:
        self._releaseGpu()
        self.runEntry = None
        self.logic.startPropagation(self.parameters, self.onProgress, self.onLog)
        return True

    def _export(self) -> bool:
        path = self.logic.export(self.parameters, self.parameters.exportFolder, self.onProgress, self.onLog)
        qt.QSettings().setValue(EXPORT_FOLDER_KEY, str(self.parameters.exportFolder))
        if path is not None:
            self.onLog(_("Exported {path}").format(path=path))
        return path is None

    def cancel(self) -> None:
        if self.download is not None:
            self.download.cancel()
        self.logic.cancel()

    def _busy(self, name: str) -> None:
        self.busyButton = self.buttons[name]
        for key, button in self.buttons.items():
            button.enabled = key == name
        self.busyButton.text = _("Cancel")
        self.ui.progressBar.value = 0
        self.timer.start()

    def _idle(self) -> None:
        self.timer.stop()
        self.busyButton = None
        for key, button in self.buttons.items():
            button.enabled = True
            button.text = self.labels[key]
        self.ui.progressBar.setFormat("%p%")        # not the last stage's name once nothing runs

    # --- while it runs --------------------------------------------------------------------------------------
    def onPoll(self) -> None:
        if self.download is not None:
            self._pollDownload()
            return
        result = self.logic.poll()
        if result is None:
            return
        self._idle()
        with slicer.util.tryWithErrorDisplay(_("The run failed."), waitCursor=True):
            self._finish(result)

    def _pollDownload(self) -> None:
        done, total = self.download.progress()
        if total:
            self.onProgress(_Progress("download", done / total))
        result = self.download.poll()
        if result is None:
            return
        self.download, pending, self._pending = None, self._pending, None
        if not result.ok:
            self._idle()
            if result.error:
                self.onLog(result.error)
                slicer.util.errorDisplay(_("The model could not be downloaded.") + "\n\n" + result.error)
            return
        self.onModelChanged()            # the model is cached now
        with slicer.util.tryWithErrorDisplay(_("Could not start."), waitCursor=True):
            try:
                pending()
            except Exception:
                self._idle()
                raise

    def _finish(self, result) -> None:
        """However the run ended, ``logic.finish`` gets it: it clears the run in every case (a cancelled run
        kept as "running" would refuse every later Segment, Propagate and DICOM export: the review's B1)."""
        if result.cancelled:
            self.logic.finish(result)
            self.onLog(_("Cancelled: nothing was changed."))
            return
        target = self.parameters.outputSegmentation if self.parameters is not None else None
        outcome = self.logic.finish(result, target, self.editor.saveStateForUndo, ask)
        if outcome.exported is not None:
            self.onLog(_("Exported {path}").format(path=outcome.exported))
        if outcome.segmentation is not None:
            self._markResearchResult(outcome.segmentation, outcome.segment_id)
            if self.logic.kind == "segmentation":
                self._sayWhatItProduced(outcome.segmentation, outcome.segment_id)
            if self.parameters is not None:
                self.parameters.outputSegmentation = outcome.segmentation
            self.editor.show(outcome.segmentation, self.logic.referenceVolume or outcome.segmentation.GetNodeReference(
                outcome.segmentation.GetReferenceImageGeometryReferenceRole()))
            self.onResult()
        if outcome.uncertainty is not None:
            slicer.util.setSliceViewerLayers(foreground=outcome.uncertainty, foregroundOpacity=0.4)
        if outcome.report:
            self.ui.propagationReportLabel.text = describeReport(outcome.report)

    def _sayWhatItProduced(self, segmentation, segmentId: str) -> None:
        """The result's volume and pieces under the Segment button; a result implausible as a GTV says so there, in
        the log and in a segment tag, and points to Segment from a click (issue 31)."""
        summary = result_check.segment_summary(segmentation, segmentId)
        text = result_check.describe(summary)
        self.ui.segmentResultLabel.text = text
        segment = segmentation.GetSegmentation().GetSegment(segmentId)
        if summary.plausible:
            segment.RemoveTag(result_check.IMPLAUSIBLE_TAG)
            return
        segment.SetTag(result_check.IMPLAUSIBLE_TAG, "; ".join(summary.problems))
        self.onLog(_("Segment result: {text}").format(text=text))

    def onProgress(self, progress) -> None:
        self.ui.progressBar.value = int(round(100 * progress.fraction))
        self.ui.progressBar.setFormat(f"{progress.stage} %p%")

    def onLog(self, line: str) -> None:
        self.ui.logText.appendPlainText(line)


class _Progress:
    def __init__(self, stage: str, fraction: float):
        self.stage, self.fraction = stage, fraction


def describeReport(report: dict) -> str:
    change = report.get("volume_change_percent")
    return _("Prior {prior:.1f} ml, current {current:.1f} ml ({change}); Dice registered prior vs result {dice:.2f}"
             ).format(prior=report["prior_volume_ml"], current=report["current_volume_ml"],
                      change="n/a" if change is None else f"{change:+.1f} %",
                      dice=report["dice_registered_prior_vs_result"])
