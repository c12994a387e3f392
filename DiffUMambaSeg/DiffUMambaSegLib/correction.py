"""Correct a GTV with a few clicks, without Qt: one request to the persistent worker per click, its result into the
same segment as one undo step.

``request`` returns at once (it writes the segment as a mask file and one JSON line); ``poll`` (the panel's
timer) applies the reply. One request is in flight at a time; what comes meanwhile is coalesced into one more
request that reads the clicks when it is sent (the latest clicks win). Every request carries all clicks of the
session, and the slices the user drew by hand ("Apply my slice edits": the slices where the segment differs from
the worker's last result) stay fixed for the rest of the session. A request the worker refuses leaves the segment
as it was and takes its new points back; a worker that died is started again by the next request.

Undo: every applied result is remembered by its fingerprint. When the segment comes back to an earlier result (Ctrl+Z
in the Segment Editor restores its saved state), the points placed since then are removed from their lists (moved
points go back), so the undone clicks are not sent again. Redo brings the segment back but not the points.

A deleted point (the place widget's Delete last / Delete all) takes back what its click did: the segment goes back to
what it was just before that click's result (the mask sent with that request, kept for the session) and the clicks
that remain are sent again by the request that follows. Not when the segment was edited by hand since the last
result: that edit stays (the status line says so; Ctrl+Z in the Segment Editor still undoes step by step).

GUI-thread work per click (the review's W6): the mask sent is the segment cropped to its voxels
(``correction_scene.write_mask``); the applied result's array (read once to write it into the segment) is the next
baseline, so no full-grid export follows a result. The Python packages are checked by ``prepare`` when the user
presses Include, Exclude or Segment from a click, never inside a click.
"""

from __future__ import annotations

import dataclasses
import itertools
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from . import correction_scene
from . import scene as scene_io
from .correction_worker import Worker, WorkerDied, WorkerFactory, serve_worker
from .result_writer import fingerprint

__all__ = ["Inputs", "ClickCorrection", "serve_worker", "describe", "target_name"]


@dataclass
class Inputs:
    """What a request is made of, read when it is sent."""
    segmentation: object
    segment_id: str
    volume: object
    clicks: list                       # correction_scene.Click
    model: Optional[Path]
    device: str = "auto"

    def key(self) -> tuple:
        return self.segmentation.GetID(), self.segment_id, self.volume.GetID()


@dataclass
class _Session:
    key: tuple
    baseline: np.ndarray               # the worker's last result (at first: the segment when the session began)
    fixed: set = field(default_factory=set)
    sent: list = field(default_factory=list)
    applied: list = field(default_factory=list)
    history: list = field(default_factory=list)   # _State of each applied result, the session's start first


@dataclass(frozen=True)
class _State:
    fingerprint: str
    clicks: tuple
    fixed: frozenset
    before: Optional[Path] = None      # the segment just before this result (its request's mask; None: empty)


@dataclass
class _Request:
    id: int
    inputs: Inputs
    clicks: list
    fixed: list
    fingerprint: str
    output: Path
    mask: Optional[Path] = None        # the segment when it was sent, cropped (None: it was empty)


def describe(reply: dict, target: str = "") -> str:
    """The status line of an applied result; ``target``: which segmentation and segment it went into."""
    return (f"Applied{f' to {target}' if target else ''}: {reply.get('changed_voxels', 0)} voxels changed, "
            f"{float(reply.get('volume_ml', 0)):.1f} ml ({reply.get('clicks', 0)} click(s), "
            f"{len(reply.get('fixed_slices') or [])} fixed slice(s), {float(reply.get('seconds', 0)):.1f} s). "
            "Ctrl+Z in the Segment Editor undoes it.")


def target_name(inputs: "Inputs") -> str:
    """"<segmentation> › <segment>" of a request: the status line names where a correction goes (the review's W5)."""
    segment = inputs.segmentation.GetSegmentation().GetSegment(inputs.segment_id) if inputs.segmentation else None
    return f"{inputs.segmentation.GetName()} › {segment.GetName()}" if segment is not None else ""


class ClickCorrection:
    def __init__(self, scene, start_worker: WorkerFactory, ensure_dependencies: Callable[[], bool] = lambda: True):
        self.scene, self.start_worker, self.ensure_dependencies = scene, start_worker, ensure_dependencies
        self.on_status: Callable[[str], None] = lambda text: None
        self.worker: Optional[Worker] = None
        self.worker_starts = 0
        self.session: Optional[_Session] = None
        self.inflight: Optional[_Request] = None
        self.last_reply: dict = {}
        self._worker_key: tuple = ()
        self._pending: Optional[Callable[[], Inputs]] = None
        self._pending_slices = False
        self._ids = itertools.count(1)
        self._work: Optional[tempfile.TemporaryDirectory] = None
        self._images: dict = {}
        self._applying = False
        self.dependencies_ready = False

    def prepare(self) -> bool:
        """Check (and, asking first, install) the Python packages the worker needs: called when the user presses
        Include, Exclude or Segment from a click, so no dialog or pip run ever happens inside a click. Once True it
        is not asked again. Raises what the installer raises (the panel shows it in the status line)."""
        if not self.dependencies_ready:
            self.dependencies_ready = bool(self.ensure_dependencies())
        return self.dependencies_ready

    @property
    def busy(self) -> bool:
        return self.inflight is not None

    # --- requests --------------------------------------------------------------------------------------------
    def request(self, read: Callable[[], Inputs], slice_edits: bool = False) -> bool:
        """Send a correction of the current clicks (``slice_edits``: and of the slices edited since the last result),
        or queue it behind the one in flight. Never waits; True while a reply is awaited (poll then)."""
        if self.inflight is not None:
            self._pending, self._pending_slices = read, self._pending_slices or slice_edits
            return True
        self._send(read, slice_edits)
        return self.inflight is not None

    def follow_undo(self, read: Callable[[], Inputs]) -> int:
        """If the segment is back at an earlier result of this session (an undo), take back the points placed since:
        remove new points, move moved points back. Returns how many points were removed or moved."""
        session = self.session
        if session is None or len(session.history) < 2 or self.inflight is not None or self._applying:
            return 0
        inputs = read()
        if inputs.segmentation is None or inputs.volume is None or session.key != inputs.key() or \
                inputs.segmentation.GetSegmentation().GetSegment(inputs.segment_id) is None:
            return 0
        now = fingerprint(inputs.segmentation, inputs.segment_id)
        earlier = [k for k, state in enumerate(session.history[:-1]) if state.fingerprint == now]
        if not earlier or session.history[-1].fingerprint == now:
            return 0                        # the latest result, or a hand edit: nothing to take back
        back = session.history[earlier[-1]]
        undone = [click for click in session.history[-1].clicks if click not in back.clicks]
        kept = {(click.node_id, click.point_id): click for click in back.clicks}
        moved = [kept[(c.node_id, c.point_id)] for c in undone if (c.node_id, c.point_id) in kept]
        removed = correction_scene.remove_clicks(self.scene, [c for c in undone if (c.node_id, c.point_id) not in kept])
        removed += correction_scene.move_clicks(self.scene, moved)
        del session.history[earlier[-1] + 1:]
        session.applied = session.sent = list(back.clicks)
        session.fixed, session.baseline = set(back.fixed), self._mask(inputs)
        self._pending = None
        self.on_status(f"Undone: the GTV is back to {len(back.clicks)} click(s)"
                       + (f"; {removed} point(s) taken back." if removed else "."))
        return removed

    def follow_removal(self, read: Callable[[], Inputs]) -> bool:
        """If points whose clicks were applied have been deleted, put the segment back to what it was just before the
        first of those clicks' results (the mask sent with that request); the clicks that remain are then sent again
        by the caller. Not when the segment was edited since the last result (that edit would be lost): the status
        line says so. Returns True when the segment went back."""
        session = self.session
        if session is None or len(session.history) < 2 or self.inflight is not None:
            return False
        inputs = read()
        if inputs.segmentation is None or inputs.volume is None or session.key != inputs.key() or \
                inputs.segmentation.GetSegmentation().GetSegment(inputs.segment_id) is None:
            return False
        present = {(click.node_id, click.point_id) for click in inputs.clicks}
        gone = {(c.node_id, c.point_id) for c in session.applied if (c.node_id, c.point_id) not in present}
        if not gone:
            return False
        first = next(k for k, state in enumerate(session.history)
                     if any((c.node_id, c.point_id) in gone for c in state.clicks))
        if fingerprint(inputs.segmentation, inputs.segment_id) != session.history[-1].fingerprint:
            session.applied = [c for c in session.applied if (c.node_id, c.point_id) not in gone]
            session.sent = list(session.applied)
            self.on_status("The GTV was edited since the last correction: the deleted point's region stays (Ctrl+Z "
                           "in the Segment Editor undoes step by step).")
            return False
        before = session.history[first].before
        self._applying = True               # our own write is not an undo
        try:
            if before is None:
                correction_scene.clear_segment(inputs.segmentation, inputs.segment_id)
            else:
                correction_scene.replace_segment(self.scene, inputs.segmentation, inputs.segment_id, before)
        finally:
            self._applying = False
        del session.history[first:]
        back = dataclasses.replace(session.history[-1], fingerprint=fingerprint(inputs.segmentation,
                                                                                inputs.segment_id))
        session.history[-1] = back
        session.applied = session.sent = list(back.clicks)
        session.fixed, session.baseline = set(back.fixed), self._mask(inputs)
        self._pending = None
        self.on_status(f"Point deleted: {target_name(inputs)} is back to before that click ({len(back.clicks)} "
                       "click(s)).")
        return True

    def _send(self, read: Callable[[], Inputs], slice_edits: bool) -> None:
        self.follow_undo(read)              # an undo since the last result: its points go before anything is sent
        self.follow_removal(read)           # a deleted point: its click's result goes, the others are sent again
        inputs = read()
        if inputs.segmentation is None or inputs.volume is None or not inputs.segment_id:
            raise ValueError("Segment or Propagate first, or press Segment from a click: there is no GTV to correct.")
        if inputs.model is None:
            raise ValueError("Choose a correction model (the catalog's click model, or a checkpoint trained with "
                             "'train --task correction').")
        if not inputs.model.is_file():
            raise FileNotFoundError(f"The correction model {inputs.model} does not exist: choose it again.")
        session = self._session(inputs)
        fixed = set(session.fixed)
        if slice_edits:
            edited = correction_scene.changed_slices(self._mask(inputs), session.baseline)
            if not edited:
                self.on_status("No slice differs from the last result: draw or erase on the slices to keep, then "
                               "press Apply my slice edits.")
                return
            fixed |= set(edited)
        elif inputs.clicks == session.sent or not inputs.clicks:
            return                          # nothing new: a preview point, a repeated event, a removed point
        worker = self._worker(inputs.model, inputs.device)
        work = self._folder()
        image = self._image(inputs.volume, work)
        number = next(self._ids)
        mask = correction_scene.write_mask(self.scene, inputs.segmentation, inputs.segment_id,
                                           work / f"mask-{number}.nrrd")
        output = work / "result.nrrd"
        output.unlink(missing_ok=True)
        request = _Request(number, inputs, list(inputs.clicks), sorted(fixed),
                           fingerprint(inputs.segmentation, inputs.segment_id), output, mask)
        message = {"id": request.id, "command": "correct", "image": str(image), "output": str(output),
                   "coordinate_system": "RAS", "clicks": [click.request() for click in request.clicks],
                   "fixed_slices": request.fixed}
        if mask is not None:                # none: the segment is empty (the worker starts from nothing)
            message["mask"] = str(mask)
        try:
            worker.send(message)
        except WorkerDied:
            failure = self._drop_worker()
            raise RuntimeError(f"The correction worker stopped: {failure}") from None
        self.inflight, session.sent = request, request.clicks
        self.on_status(f"Correcting {target_name(inputs)} ({len(request.clicks)} click(s), {len(request.fixed)} "
                       "fixed slice(s))" + ("" if worker.ready else "; loading the correction model first") + " ...")

    def _session(self, inputs: Inputs) -> _Session:
        if self.session is None or self.session.key != inputs.key():
            self.session = self._new_session(inputs)
        return self.session

    def _new_session(self, inputs: Inputs) -> _Session:
        start = _State(fingerprint(inputs.segmentation, inputs.segment_id), (), frozenset())
        return _Session(inputs.key(), self._mask(inputs), history=[start])

    def _mask(self, inputs: Inputs) -> np.ndarray:
        return correction_scene.segment_mask(self.scene, inputs.segmentation, inputs.segment_id, inputs.volume)

    def _worker(self, model: Path, device: str) -> Worker:
        key = (str(model), device)
        if self.worker is not None and (self._worker_key != key or self.worker.returncode is not None):
            self._drop_worker()
        if self.worker is None:
            if not self.prepare():          # normally done when Include / Exclude was pressed
                raise RuntimeError("The correction worker cannot run without DiffUMambaSeg's Python packages.")
            self.worker, self._worker_key = self.start_worker(model, device), key
            self.worker_starts += 1
        return self.worker

    def _folder(self) -> Path:
        if self._work is None:
            self._work = tempfile.TemporaryDirectory(prefix="DiffUMambaSeg-correction-")
        return Path(self._work.name)

    def _image(self, volume, work: Path) -> Path:
        """The volume as a file, written once per volume (again only if its voxels changed)."""
        image = volume.GetImageData()
        key = (volume.GetID(), image.GetMTime() if image is not None else 0)
        path = self._images.get(key)
        if path is None or not path.is_file():
            path = scene_io.write_volume(volume, work / f"image-{len(self._images) + 1}.nrrd", compress=False)
            self._images[key] = path
        return path

    # --- replies ---------------------------------------------------------------------------------------------
    def poll(self, save_undo: Callable[[object], Optional[bool]] = lambda node: None) -> bool:
        """Apply the reply when it has come; True while one is still awaited (the panel's timer keeps polling).
        ``save_undo(segmentation)`` saves the editor's undo state first; False from it: do not apply (the editor no
        longer shows that segmentation)."""
        request = self.inflight
        if request is None:
            return False
        reply = next((r for r in self.worker.replies() if r.get("id") == request.id), None)
        if reply is None and not self.worker.ended:
            return True
        self.inflight = None
        try:
            if reply is None:
                self._died(request)
            else:
                self._finish(request, reply, save_undo)
            if self._pending is not None:
                read, slices = self._pending, self._pending_slices
                self._pending, self._pending_slices = None, False
                self._send(read, slices)
        except Exception as error:  # noqa: BLE001 - a timer's slot: the status line, never a traceback in the console
            self.on_status(f"Could not correct: {error}")
        return self.inflight is not None

    def _finish(self, request: _Request, reply: dict, save_undo: Callable[[object], Optional[bool]]) -> None:
        session, inputs = self.session, request.inputs
        if not reply.get("ok"):
            taken_back = [click for click in request.clicks if session is None or click not in session.applied]
            removed = correction_scene.remove_clicks(self.scene, taken_back)
            if session is not None:
                session.sent = list(session.applied)
            self.on_status(f"Not applied: {reply.get('error', 'the worker refused the request')}"
                           + (f" ({removed} new point(s) removed)" if removed else ""))
            return
        segment = inputs.segmentation.GetSegmentation().GetSegment(inputs.segment_id)
        if session is None or session.key != inputs.key() or segment is None or \
                fingerprint(inputs.segmentation, inputs.segment_id) != request.fingerprint:
            if session is not None:
                session.sent = list(session.applied)    # the next click sends these clicks again
            self.on_status("The GTV changed while the correction ran: its result was not applied (your change stays).")
            return
        if save_undo(inputs.segmentation) is False:
            session.sent = list(session.applied)
            self.on_status(f"Not applied: the Segment Editor no longer shows {target_name(inputs)} (the next click "
                           "corrects the segmentation it shows).")
            return
        self._applying = True               # our own write is not an undo
        try:
            result = correction_scene.replace_segment(self.scene, inputs.segmentation, inputs.segment_id,
                                                      request.output, inputs.volume)
        finally:
            self._applying = False
        session.baseline = result if result is not None else self._mask(inputs)
        session.applied, session.fixed = request.clicks, set(request.fixed)
        session.history.append(_State(fingerprint(inputs.segmentation, inputs.segment_id), tuple(request.clicks),
                                      frozenset(request.fixed), request.mask))
        self.last_reply = reply
        self.on_status(describe(reply, target_name(inputs)))

    def _died(self, request: _Request) -> None:
        failure = self._drop_worker()
        if self.session is not None:
            self.session.sent = list(self.session.applied)
        self.on_status(f"Not applied: the correction worker stopped: {failure}")

    # --- life cycle ------------------------------------------------------------------------------------------
    def _drop_worker(self) -> str:
        worker, self.worker, self._worker_key = self.worker, None, ()
        if worker is None:
            return ""
        worker.replies()                    # take what is left, so the failure names the command's error
        failure = worker.failure() if worker.returncode is not None else ""
        worker.stop()
        return failure or f"exit status {worker.returncode}"

    def restart(self, read: Optional[Callable[[], Inputs]] = None) -> None:
        """A new session (a new AI result): forget clicks and fixed slices; the segment as it is now is the result
        later slice edits are compared with. A request in flight belongs to the old session: its reply is dropped."""
        self.session, self._pending, self._pending_slices, self.inflight = None, None, False, None
        inputs = read() if read is not None else None
        if inputs is not None and None not in (inputs.segmentation, inputs.volume) and inputs.segment_id:
            self.session = self._new_session(inputs)

    def stop(self) -> None:
        """Stop the worker and remove the session's files (module cleanup, scene close)."""
        self.inflight, self._pending, self.session = None, None, None
        self._drop_worker()
        if self._work is not None:
            self._work.cleanup()
            self._work = None
        self._images.clear()
