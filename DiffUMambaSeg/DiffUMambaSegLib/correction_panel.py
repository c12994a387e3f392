"""The "Correct with clicks" section: Include and Exclude point lists placed with Slicer's own markups place
widgets (persistent place mode: click, click, click), the correction model, "Segment from a click", "Apply my slice
edits", one status line.

Each defined point (``PointPositionDefinedEvent``; a moved point at ``PointEndInteractionEvent``) asks
``correction.ClickCorrection`` for a request; a change of the segmentation (the editor's Ctrl+Z) lets it take
undone points back; a timer polls the reply and the result goes into the segment being
corrected (the one selected in the embedded Segment Editor, else "GTV") with the editor's undo state saved first.

The model list offers the catalog's click models (task "correction" only; the default, the highest version, first)
and last "Checkpoint or zip" (the path field). A catalog model is installed into the model cache on the first click
that needs it (copied from the extension's Resources or downloaded, checked against its SHA-256 and its package
manifest: ``ModelCache``, in the background), then that click is sent.

"Segment from a click" (or an include click when there is no GTV to correct): at the next include click a new
segmentation "<CT> GTV" with an empty GTV segment is made on the input CT, and that click goes through the same
correction path as every other: its empty mask and the click go to the worker, whose answer fills the segment (one
undo step back to the empty GTV). Qt is not imported here: the timer is injected (a ``qt.QTimer`` in Slicer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Protocol, Sequence

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


class CorrectionPanel:
    def __init__(self, ui, correction: ClickCorrection, editor: Editor, timer: Timer, scene,
                 entries: Sequence[catalog.ModelEntry] = (), cache: Optional[ModelCache] = None):
        """``entries``: the model catalog (only its click models are offered); ``cache``: where they are installed."""
        import slicer

        self.ui, self.correction, self.editor, self.timer, self.scene = ui, correction, editor, timer, scene
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
        ui.applySliceEditsButton.clicked.connect(lambda: self._request(True))
        ui.segmentFromClickButton.clicked.connect(lambda: self.onSegmentFromClick())
        for widget in self._placeWidgets():
            widget.placeMultipleMarkups = slicer.qSlicerMarkupsPlaceWidget.ForcePlaceMultipleMarkups
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
            for event in (node.PointPositionDefinedEvent, node.PointEndInteractionEvent):
                self._observations.append((node, node.AddObserver(event, self.onPointsChanged)))
        self._observeSegmentation(parameters.outputSegmentation)

    def _pointList(self, name: str, color, labels: str):
        node = self.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
        node.SetControlPointLabelFormat(labels)
        node.CreateDefaultDisplayNodes()
        display = node.GetDisplayNode()
        display.SetSelectedColor(*color)
        display.SetColor(*color)
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

    def inputs(self) -> Inputs:
        """The segment being corrected, its CT, the clicks, the model and device, as they are now."""
        parameters = self.parameters
        segmentation = parameters.outputSegmentation if parameters is not None else None
        volume = segmentation.GetNodeReference(segmentation.GetReferenceImageGeometryReferenceRole()) \
            if segmentation is not None else None
        clicks = correction_scene.clicks(parameters.includePoints, parameters.excludePoints) if parameters else []
        return Inputs(segmentation, self._segmentId(segmentation), volume, clicks, self.model(),
                      parameters.device if parameters else "auto")

    def _segmentId(self, segmentation) -> str:
        if segmentation is None:
            return ""
        content = segmentation.GetSegmentation()
        widget = self.editor.widget
        selected = widget.currentSegmentID() if widget.segmentationNode() is segmentation else ""
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
        segmentation = self.parameters.outputSegmentation
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
    def onPointsChanged(self, caller=None, event=None) -> None:
        volume = self._newGtvVolume() if self.parameters is not None else None
        if volume is not None:
            if not correction_scene.clicks(self.parameters.includePoints, None):
                self.onStatus("There is no GTV yet: press Include (or Segment from a click) and click inside the "
                              "tumour; the GTV is made from that click.")
                return
            try:
                self._makeGtv(volume)
            except (ValueError, OSError, RuntimeError, KeyError) as error:
                self.onStatus(f"Could not make the GTV: {error}")
                return
        self._request(False)

    def onSegmentationChanged(self, caller=None, event=None) -> None:
        try:
            self.correction.follow_undo(self.inputs)
        except (ValueError, OSError, RuntimeError, KeyError) as error:
            self.onStatus(str(error))

    def _request(self, sliceEdits: bool) -> None:
        try:
            if self._installing(sliceEdits):
                return
            if self.correction.request(self.inputs, sliceEdits):
                self.timer.start()
        except (ValueError, OSError, RuntimeError, KeyError) as error:   # a status line, never a dialog mid-click
            self.onStatus(str(error))

    def onPoll(self) -> None:
        if self.download is not None:
            self._pollDownload()
        elif not self.correction.poll(self.editor.saveStateForUndo):
            self.timer.stop()

    def onStatus(self, text: str) -> None:
        self.ui.correctionStatusLabel.text = text

    def restart(self) -> None:
        """A new Segment or Propagate result: a new session, no points, "Segment from a click" no longer armed."""
        self.newGtvVolume = None
        if self.parameters is not None:
            for field in POINT_LISTS:
                node = getattr(self.parameters, field)
                if node is not None:
                    node.RemoveAllControlPoints()
        self.correction.restart(self.inputs)
        self._observeSegmentation(self.parameters.outputSegmentation if self.parameters is not None else None)
        self.onStatus("")

    def exit(self) -> None:
        """Leaving the module: no place mode left on (a click in another module must not correct the GTV), and
        "Segment from a click" no longer armed."""
        self.newGtvVolume = None
        for widget in self._placeWidgets():
            if widget.placeModeEnabled:
                widget.setPlaceModeEnabled(False)

    def stop(self) -> None:
        """Module cleanup or scene close: no timer, no worker, no install, no observers."""
        self.timer.stop()
        self.newGtvVolume = None
        if self.download is not None:
            self.download.cancel()                     # leaves nothing in the cache
            self.download, self._downloadSlices = None, False
        self.correction.stop()
        self._unobserve()
