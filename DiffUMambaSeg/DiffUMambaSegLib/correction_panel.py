"""The "Correct with clicks" section: Include and Exclude point lists placed with Slicer's own markups place
widgets (persistent place mode: click, click, click), the correction model, "Segment from a click", "Apply my slice
edits", one status line.

Each point placed with the module's own Include / Exclude place widget (``PointPositionDefinedEvent``; a moved point
at ``PointEndInteractionEvent``; a deleted or unset point) asks ``correction.ClickCorrection`` for a request, but
never inside the markups event: the event only queues it with a zero-delay single shot (``defer``:
``qt.QTimer.singleShot(0, ...)`` in Slicer), so exports, file writes and dialogs never run inside the markups
widget's ``PlacePoint`` (the review's W6). A change of the segmentation (the editor's Ctrl+Z) lets it take undone
points back; a timer polls the reply and the result goes into the segment being corrected with the editor's undo
state saved first.

Where corrections go (the review's W5): the segmentation the embedded Segment Editor shows (its own selector can
switch it, and the core Segment Editor shares its node), its selected segment, else "GTV"; only when the editor
shows none, the Export selector's segmentation, which is then shown. The status line names it; undo tracking
follows it. A result whose segmentation the editor no longer shows is not applied.

Only clicks the user makes in this module count (the review's W1): Slicer's Markups logic makes every new point list
the active place list (vtkSlicerMarkupsLogic::OnMRMLSceneNodeAdded), so the Include / Exclude lists are made with
the previous active list put back, points are ignored while the module is not entered or when they did not come
from the module's place mode (a point placed from the Markups toolbar), and leaving the module deactivates its
lists and stops polling (a reply that comes meanwhile is applied when the module is shown again).

The Python packages are checked (and installed, asking first) when Include, Exclude or Segment from a click is
pressed, never inside a click; any error goes to the status line.

The model list offers the catalog's click models (task "correction" only; the default, the highest version, first)
and last "Checkpoint or zip" (the path field). A catalog model is installed into the model cache on the first click
that needs it (copied from the extension's Resources or downloaded, checked against its SHA-256 and its package
manifest: ``ModelCache``, in the background), then that click is sent.

"Segment from a click" (or an include click when there is no GTV to correct): at the next include click a new
segmentation "<CT> GTV" with an empty GTV segment is made on the input CT, and that click goes through the same
correction path as every other: its empty mask and the click go to the worker, whose answer fills the segment (one
undo step back to the empty GTV). Qt is not imported here: the timer and ``defer`` are injected (Qt's in Slicer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Protocol, Sequence

from . import catalog, correction_scene
from . import scene as scene_io
from .correction import ClickCorrection, Inputs
from .logic import chosen_path
from .model_cache import ModelCache
from .model_download import DownloadJob

__all__ = ["CorrectionPanel", "POINT_LISTS", "POLL_MS", "TASK"]

POLL_MS = 100
# parameter -> (node name, colour (distinct from each other and from the red GTV), label format)
POINT_LISTS = {"includePoints": ("GTV include", (0.1, 0.85, 0.2), "+%d"),
               "excludePoints": ("GTV exclude", (0.2, 0.5, 1.0), "-%d")}
GTV_SEGMENT = "GTV"
TASK = "correction"           # the catalog task of the models this section offers
CHECKPOINT_ITEM = ""          # the model list's last item: the checkpoint or zip in the path field
CHECKPOINT_HELP = ("A click model trained with diffumamba train --task correction: a checkpoint (.safetensors) or a "
                   "model package (.zip) written by diffumamba package.")


class Timer(Protocol):
    timeout: Any

    def setInterval(self, milliseconds: int) -> None: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


class Editor(Protocol):
    widget: Any

    def saveStateForUndo(self, segmentation) -> None: ...


def _same(a, b) -> bool:
    return a is not None and b is not None and a.GetID() == b.GetID()


class CorrectionPanel:
    def __init__(self, ui, correction: ClickCorrection, editor: Editor, timer: Timer, scene,
                 entries: Sequence[catalog.ModelEntry] = (), cache: Optional[ModelCache] = None, *,
                 defer: Callable[[Callable[[], None]], None],
                 acknowledge: Callable[[catalog.ModelEntry], bool] = lambda entry: True):
        """``entries``: the model catalog (only its click models are offered); ``cache``: where they are installed;
        ``defer(function)``: runs ``function`` once the event loop is back, after the markups event that asked for it
        has returned (``qt.QTimer.singleShot(0, function)`` in Slicer; injected, as the timer is);
        ``acknowledge(entry)``: False unless the user accepted a research (not for clinical use) click model, asked
        once per model version when Include / Exclude / Segment from a click is pressed (``Panel.acknowledge``)."""
        import slicer

        self.ui, self.correction, self.editor, self.timer, self.scene = ui, correction, editor, timer, scene
        self.acknowledge = acknowledge
        self.defer = defer
        self.entered = False                           # enter() / exit(): clicks count only while shown
        self._queued: Optional[str] = None             # "click" or "removal": a request waits for the event loop
        self._generation = 0                           # a queued request from before stop() / exit() is dropped
        self._removing = False                         # our own removal of points (restart): not the user's
        self.entries = catalog.for_task(entries, TASK)
        self.cache = cache or ModelCache()
        self.parameters = None
        self.download: Optional[DownloadJob] = None     # the click model being installed
        self._downloadSlices = False                   # the request waiting for it sends slice edits
        self.newGtvVolume = None                       # "Segment from a click": the CT the next include click is on
        self._observations: list = []
        self._segmentationObservation: tuple = ()
        correction.on_status = self.onStatus
        timer.setInterval(POLL_MS)
        timer.timeout.connect(self.onPoll)
        ui.applySliceEditsButton.clicked.connect(lambda: self.onApplySliceEdits())
        ui.segmentFromClickButton.clicked.connect(lambda: self.onSegmentFromClick())
        for widget in self._placeWidgets():
            widget.placeMultipleMarkups = slicer.qSlicerMarkupsPlaceWidget.ForcePlaceMultipleMarkups
            widget.activeMarkupsPlaceModeChanged.connect(self.onPlaceModeChanged)
        editor.widget.segmentationNodeChanged.connect(lambda node: self._observeSegmentation(self._target()))
        self._fillModels()
        ui.correctionModelComboBox.currentIndexChanged.connect(self.onModelChanged)
        self.onModelChanged()

    def _placeWidgets(self):
        return self.ui.includePlaceWidget, self.ui.excludePlaceWidget

    # --- the correction model -------------------------------------------------------------------------------
    def _fillModels(self) -> None:
        combo = self.ui.correctionModelComboBox
        combo.clear()
        for entry in self.entries:                     # the default (highest version) first: selected
            combo.addItem(f"{entry.name} {entry.version}", f"{entry.id}@{entry.version}")
        combo.addItem("Checkpoint or zip (choose below)", CHECKPOINT_ITEM)

    def selectedEntry(self) -> Optional[catalog.ModelEntry]:
        key = self.ui.correctionModelComboBox.itemData(self.ui.correctionModelComboBox.currentIndex)
        return next((e for e in self.entries if f"{e.id}@{e.version}" == key), None)

    def onModelChanged(self, index=None) -> None:
        entry = self.selectedEntry()
        self.ui.correctionModelPathLineEdit.enabled = entry is None
        self.ui.correctionModelInfoLabel.text = catalog.describe(entry, self.cache) if entry else CHECKPOINT_HELP

    def model(self) -> Optional[Path]:
        """What the worker loads: the selected catalog model's verified file in the cache (None until installed),
        else the checkpoint or zip in the path field."""
        entry = self.selectedEntry()
        if entry is not None:
            files = self.cache.checkpoints(entry)
            return files[0] if files else None
        return chosen_path(self.parameters.correctionModelPath) if self.parameters is not None else None

    def _installing(self, sliceEdits: bool) -> bool:
        """True while the selected catalog model is installed into the cache (the request goes once it is there)."""
        entry = self.selectedEntry()
        if self.download is None and (entry is None or self.cache.is_cached(entry)):
            return False
        self._downloadSlices = self._downloadSlices or sliceEdits
        if self.download is None:
            self.download = DownloadJob(self.cache, entry).start()
            self.onStatus(f"Installing the click model {entry.name} {entry.version} (checked against its SHA-256 "
                          "and its package manifest) ...")
            self.timer.start()
        return True

    def _pollDownload(self) -> None:
        result = self.download.poll()
        if result is None:
            return
        self.download, slices, self._downloadSlices = None, self._downloadSlices, False
        self.timer.stop()
        self.onModelChanged()                          # "Cached: yes"
        if result.cancelled:
            return
        if not result.ok:
            self.onStatus(f"The click model could not be installed: {result.error}")
            return
        self._request(slices)

    # --- parameter node -------------------------------------------------------------------------------------
    def setParameters(self, parameters) -> None:
        """Bind the point lists of ``parameters`` (made when missing) to the place widgets and observe them."""
        self._unobserve()
        self.parameters = parameters
        if parameters is None:
            for widget in self._placeWidgets():
                widget.setCurrentNode(None)
            return
        for (field, (name, color, labels)), widget in zip(POINT_LISTS.items(), self._placeWidgets()):
            node = getattr(parameters, field)
            if node is None:
                node = self._pointList(name, color, labels)
                setattr(parameters, field, node)
            widget.setCurrentNode(node)
            for event, callback in ((node.PointPositionDefinedEvent, self.onPointPlaced),
                                    (node.PointEndInteractionEvent, self.onPointMoved),
                                    (node.PointRemovedEvent, self.onPointRemoved),
                                    (node.PointPositionUndefinedEvent, self.onPointRemoved)):
                self._observations.append((node, node.AddObserver(event, callback)))
        self._observeSegmentation(self._target())

    def _pointList(self, name: str, color, labels: str):
        """A new point list that does NOT stay Slicer's active place list: the Markups logic makes every point list
        added to the scene the active one (vtkSlicerMarkupsLogic.cxx:436-481, ``SetActiveList``), and the Markups
        toolbar places into the active list in any module; the list active before is put back."""
        selection = self.scene.GetNodeByID("vtkMRMLSelectionNodeSingleton")
        previous = (selection.GetActivePlaceNodeClassName(), selection.GetActivePlaceNodeID()) if selection else None
        node = self.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
        node.SetControlPointLabelFormat(labels)
        node.CreateDefaultDisplayNodes()
        display = node.GetDisplayNode()
        display.SetSelectedColor(*color)
        display.SetColor(*color)
        if selection is not None and selection.GetActivePlaceNodeID() == node.GetID():
            className, nodeId = previous
            if className:
                selection.SetReferenceActivePlaceNodeClassName(className)
            selection.SetReferenceActivePlaceNodeID(nodeId)
        return node

    def _unobserve(self) -> None:
        for node, tag in self._observations:
            node.RemoveObserver(tag)
        self._observations = []
        self._observeSegmentation(None)

    def _observeSegmentation(self, segmentation) -> None:
        """Watch the segment being corrected for an undo (the editor restores a saved state of the segmentation)."""
        if self._segmentationObservation:
            node, tag = self._segmentationObservation
            node.RemoveObserver(tag)
            self._segmentationObservation = ()
        if segmentation is not None:
            import slicer

            event = slicer.vtkSegmentation.SegmentModified
            self._segmentationObservation = (segmentation, segmentation.AddObserver(event, self.onSegmentationChanged))

    def _target(self):
        """The segmentation corrections go to: the one the embedded Segment Editor shows, else (the editor shows
        none) the Export selector's."""
        shown = self.editor.widget.segmentationNode()
        if shown is not None:
            return shown
        return self.parameters.outputSegmentation if self.parameters is not None else None

    def _volume(self, segmentation):
        """Its CT: the segmentation's reference geometry volume, else the editor's source volume."""
        volume = segmentation.GetNodeReference(segmentation.GetReferenceImageGeometryReferenceRole()) \
            if segmentation is not None else None
        if volume is None and segmentation is not None and _same(self.editor.widget.segmentationNode(), segmentation):
            volume = self.editor.widget.sourceVolumeNode()
        return volume

    def inputs(self) -> Inputs:
        """The segment being corrected, its CT, the clicks, the model and device, as they are now."""
        parameters = self.parameters
        segmentation = self._target()
        clicks = correction_scene.clicks(parameters.includePoints, parameters.excludePoints) if parameters else []
        return Inputs(segmentation, self._segmentId(segmentation), self._volume(segmentation), clicks, self.model(),
                      parameters.device if parameters else "auto")

    def _segmentId(self, segmentation) -> str:
        if segmentation is None:
            return ""
        content = segmentation.GetSegmentation()
        widget = self.editor.widget
        selected = widget.currentSegmentID() if _same(widget.segmentationNode(), segmentation) else ""
        if selected and content.GetSegment(selected) is not None:
            return selected
        return content.GetSegmentIdBySegmentName(GTV_SEGMENT) or (
            content.GetNthSegmentID(0) if content.GetNumberOfSegments() else "")

    # --- a new GTV from one click ---------------------------------------------------------------------------
    def onSegmentFromClick(self) -> None:
        """Arm "Segment from a click" on the input CT: the points go, Include is pressed, and the next include click
        makes the GTV."""
        volume = self.parameters.inputVolume if self.parameters is not None else None
        if volume is None:
            self.onStatus("Choose the input CT (under Segment GTV) first: the GTV is made on it.")
            return
        if self.selectedEntry() is None and chosen_path(self.parameters.correctionModelPath) is None:
            self.onStatus("Choose a correction model first (the catalog's click model, or a checkpoint or zip).")
            return
        if not self._prepare():
            return
        self.restart()                                 # a new GTV starts a new session: no points
        self.newGtvVolume = volume
        if self.ui.excludePlaceWidget.placeModeEnabled:
            self.ui.excludePlaceWidget.setPlaceModeEnabled(False)
        self.ui.includePlaceWidget.setPlaceModeEnabled(True)
        self.onStatus(f"Click once inside the tumour on {volume.GetName()}: the GTV is made from that click; more "
                      "Include / Exclude clicks then correct it.")

    def _newGtvVolume(self):
        """The CT to make a new GTV on at this click: the one "Segment from a click" was pressed for, or, when there
        is no GTV to correct, the input CT; None when there is a GTV to correct."""
        if self.newGtvVolume is not None:
            return self.newGtvVolume
        segmentation = self._target()
        if segmentation is not None and self._segmentId(segmentation):
            return None
        return self.parameters.inputVolume

    def _makeGtv(self, volume) -> None:
        """A new segmentation "<CT> GTV" with an empty GTV segment, shown in the editor and corrected from now on."""
        segmentation = scene_io.empty_gtv(self.scene, volume, self.scene.GenerateUniqueName(f"{volume.GetName()} GTV"))
        self.newGtvVolume = None
        self.parameters.outputSegmentation = segmentation
        self.editor.show(segmentation, volume)
        self.correction.restart(self.inputs)           # the session starts at the empty GTV (an undo comes back there)
        self._observeSegmentation(segmentation)

    # --- events ---------------------------------------------------------------------------------------------
    def onPlaceModeChanged(self, enabled: bool) -> None:
        """Include or Exclude pressed: the Python packages are checked now (a dialog here is a button's, not a
        click's); without them place mode goes off again."""
        if enabled and self.entered and not self._prepare():
            for widget in self._placeWidgets():
                if widget.placeModeEnabled:
                    widget.setPlaceModeEnabled(False)

    def _prepare(self) -> bool:
        entry = self.selectedEntry()
        if entry is not None and not self.acknowledge(entry):
            self.onStatus(f"Not started: {entry.name} {entry.version} was not acknowledged as a research model "
                          "(not for clinical use).")
            return False
        try:
            if self.correction.prepare():
                return True
            self.onStatus("The correction worker cannot run without DiffUMambaSeg's Python packages (not installed).")
        except Exception as error:  # noqa: BLE001 - pip's CalledProcessError and the like: said in the status line
            self.onStatus(f"Could not install the correction's Python packages: {error}")
        return False

    def _placing(self, node) -> bool:
        """The point came from the module's own place mode: its list's place widget is placing."""
        return any(_same(widget.currentNode(), node) and widget.placeModeEnabled for widget in self._placeWidgets())

    def onPointPlaced(self, caller=None, event=None) -> None:
        """A VTK event inside the markups widget's PlacePoint: only decide whether the click is ours, and queue."""
        if self.entered and self._placing(caller):
            self._queue("click")

    def onPointMoved(self, caller=None, event=None) -> None:
        if self.entered:
            self._queue("click")

    def onPointRemoved(self, caller=None, event=None) -> None:
        """A deleted or unset point (the place widget's Delete): its click's result goes (``follow_removal``)."""
        if self.entered and not self._removing and self.correction.session is not None:
            self._queue("removal")

    def _queue(self, kind: str) -> None:
        if self._queued is not None:
            self._queued = "click" if "click" in (self._queued, kind) else kind
            return
        self._queued, generation = kind, self._generation
        self.defer(lambda: self._runQueued(generation))

    def _runQueued(self, generation: int) -> None:
        if generation != self._generation or self._queued is None:
            return
        kind, self._queued = self._queued, None
        if not self.entered or self.parameters is None:
            return
        if kind == "click":
            self.onClick()
        elif self.correction.session is not None:
            self._request(False)

    def onClick(self) -> None:
        """A click of the user's (after its markups event): make the GTV when there is none, else correct it."""
        volume = self._newGtvVolume() if self.parameters is not None else None
        if volume is not None:
            if not correction_scene.clicks(self.parameters.includePoints, None):
                self.onStatus("There is no GTV yet: press Include (or Segment from a click) and click inside the "
                              "tumour; the GTV is made from that click.")
                return
            try:
                self._makeGtv(volume)
            except Exception as error:  # noqa: BLE001 - the status line, never a traceback
                self.onStatus(f"Could not make the GTV: {error}")
                return
        self._request(False)

    def onApplySliceEdits(self) -> None:
        if self._prepare():
            self._request(True)

    def onSegmentationChanged(self, caller=None, event=None) -> None:
        try:
            self.correction.follow_undo(self.inputs)
        except Exception as error:  # noqa: BLE001 - a VTK event: the status line, never a traceback
            self.onStatus(str(error))

    def _request(self, sliceEdits: bool) -> None:
        try:
            target = self._target()
            if target is not None and self.editor.widget.segmentationNode() is None:
                self.editor.show(target, self._volume(target))    # what is corrected is what the editor shows
            self._observeSegmentation(target)                    # undo tracking follows the target
            if self._installing(sliceEdits):
                return
            if self.correction.request(self.inputs, sliceEdits):
                self.timer.start()
        except Exception as error:  # noqa: BLE001 - pip's CalledProcessError too: the status line, never a dialog
            self.onStatus(str(error))

    def saveUndo(self, segmentation) -> bool:
        """The editor's undo state before a result is applied; False (not applied) when the editor no longer shows
        the segmentation the request was for: saving would switch the editor (and the core Segment Editor, which
        shares its node) back to it."""
        if not _same(self.editor.widget.segmentationNode(), segmentation):
            return False
        self.editor.saveStateForUndo(segmentation)
        return True

    def onPoll(self) -> None:
        if self.download is not None:
            self._pollDownload()
        elif not self.correction.poll(self.saveUndo):
            self.timer.stop()

    def onStatus(self, text: str) -> None:
        self.ui.correctionStatusLabel.text = text

    def restart(self) -> None:
        """A new Segment or Propagate result: a new session, no points, "Segment from a click" no longer armed."""
        self.newGtvVolume = None
        if self.parameters is not None:
            self._removing = True
            try:
                for field in POINT_LISTS:
                    node = getattr(self.parameters, field)
                    if node is not None:
                        node.RemoveAllControlPoints()
            finally:
                self._removing = False
        self.correction.restart(self.inputs)
        self._observeSegmentation(self._target())
        self.onStatus("")

    def enter(self) -> None:
        """The module is shown: clicks count again, and a reply or install that came meanwhile is taken up."""
        self.entered = True
        self._observeSegmentation(self._target())
        if self.correction.busy or self.download is not None:
            self.timer.start()

    def exit(self) -> None:
        """Leaving the module: no place mode left on, the module's lists no longer Slicer's active place list (the
        Markups toolbar places into it in any module), nothing queued, no polling (a reply is applied when the
        module is shown again), and "Segment from a click" no longer armed."""
        self.entered, self._queued, self._generation = False, None, self._generation + 1
        self.newGtvVolume = None
        self.timer.stop()
        for widget in self._placeWidgets():
            if widget.placeModeEnabled:
                widget.setPlaceModeEnabled(False)
            if widget.currentNodeActive:
                widget.setCurrentNodeActive(False)

    def stop(self) -> None:
        """Module cleanup or scene close: no timer, no worker, no install, no observers, nothing queued."""
        self.timer.stop()
        self._queued, self._generation = None, self._generation + 1
        self.newGtvVolume = None
        if self.download is not None:
            self.download.cancel()                     # leaves nothing in the cache
            self.download, self._downloadSlices = None, False
        self.correction.stop()
        self._unobserve()
