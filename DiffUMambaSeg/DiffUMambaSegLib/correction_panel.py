"""The "Correct with clicks" section: Include and Exclude point lists placed with Slicer's own markups place
widgets (persistent place mode: click, click, click), the correction model, "Apply my slice edits", one status line.

Each defined point (``PointPositionDefinedEvent``; a moved point at ``PointEndInteractionEvent``) asks
``correction.ClickCorrection`` for a request; a change of the segmentation (the editor's Ctrl+Z) lets it take
undone points back; a timer polls the reply and the result goes into the segment being
corrected (the one selected in the embedded Segment Editor, else "GTV") with the editor's undo state saved first.
Qt is not imported here: the timer is injected (a ``qt.QTimer`` in Slicer).
"""

from __future__ import annotations

from typing import Any, Protocol

from . import correction_scene
from .correction import ClickCorrection, Inputs
from .logic import chosen_path

__all__ = ["CorrectionPanel", "POINT_LISTS", "POLL_MS"]

POLL_MS = 100
# parameter -> (node name, colour (distinct from each other and from the red GTV), label format)
POINT_LISTS = {"includePoints": ("GTV include", (0.1, 0.85, 0.2), "+%d"),
               "excludePoints": ("GTV exclude", (0.2, 0.5, 1.0), "-%d")}
GTV_SEGMENT = "GTV"


class Timer(Protocol):
    timeout: Any

    def setInterval(self, milliseconds: int) -> None: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


class Editor(Protocol):
    widget: Any

    def saveStateForUndo(self, segmentation) -> None: ...


class CorrectionPanel:
    def __init__(self, ui, correction: ClickCorrection, editor: Editor, timer: Timer, scene):
        import slicer

        self.ui, self.correction, self.editor, self.timer, self.scene = ui, correction, editor, timer, scene
        self.parameters = None
        self._observations: list = []
        self._segmentationObservation: tuple = ()
        correction.on_status = self.onStatus
        timer.setInterval(POLL_MS)
        timer.timeout.connect(self.onPoll)
        ui.applySliceEditsButton.clicked.connect(lambda: self._request(True))
        for widget in self._placeWidgets():
            widget.placeMultipleMarkups = slicer.qSlicerMarkupsPlaceWidget.ForcePlaceMultipleMarkups

    def _placeWidgets(self):
        return self.ui.includePlaceWidget, self.ui.excludePlaceWidget

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
        return Inputs(segmentation, self._segmentId(segmentation), volume, clicks,
                      chosen_path(parameters.correctionModelPath) if parameters else None,
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

    # --- events ---------------------------------------------------------------------------------------------
    def onPointsChanged(self, caller=None, event=None) -> None:
        self._request(False)

    def onSegmentationChanged(self, caller=None, event=None) -> None:
        try:
            self.correction.follow_undo(self.inputs)
        except (ValueError, OSError, RuntimeError, KeyError) as error:
            self.onStatus(str(error))

    def _request(self, sliceEdits: bool) -> None:
        try:
            if self.correction.request(self.inputs, sliceEdits):
                self.timer.start()
        except (ValueError, OSError, RuntimeError, KeyError) as error:   # a status line, never a dialog mid-click
            self.onStatus(str(error))

    def onPoll(self) -> None:
        if not self.correction.poll(self.editor.saveStateForUndo):
            self.timer.stop()

    def onStatus(self, text: str) -> None:
        self.ui.correctionStatusLabel.text = text

    def restart(self) -> None:
        """A new Segment or Propagate result: a new session, no points."""
        if self.parameters is not None:
            for field in POINT_LISTS:
                node = getattr(self.parameters, field)
                if node is not None:
                    node.RemoveAllControlPoints()
        self.correction.restart(self.inputs)
        self._observeSegmentation(self.parameters.outputSegmentation if self.parameters is not None else None)
        self.onStatus("")

    def exit(self) -> None:
        """Leaving the module: no place mode left on (a click in another module must not correct the GTV)."""
        for widget in self._placeWidgets():
            if widget.placeModeEnabled:
                widget.setPlaceModeEnabled(False)

    def stop(self) -> None:
        """Module cleanup or scene close: no timer, no worker, no observers."""
        self.timer.stop()
        self.correction.stop()
        self._unobserve()
