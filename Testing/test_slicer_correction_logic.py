"""The pieces of click correction that need no Slicer application: the worker process wrapper (non-blocking reads,
the ready line, the command's error after a death, stop), and ``ClickCorrection`` on real MRML (slicer-core) with a
scripted worker: requests carry every click in RAS, repeated or preview-only events send nothing, requests during one
in flight are coalesced into one with the latest clicks, a refused request takes its new points back and changes
nothing, a segment edited meanwhile is not overwritten, fixed slices are the slices that differ from the last
result, a dead worker is replaced, the image file is written once, and an undo takes back the points placed since."""

import json
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer", reason="slicer-core (installed by scripts/install.sh) is needed")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "DiffUMambaSeg"))

from DiffUMambaSegLib import correction_scene, scene as scene_io  # noqa: E402
from DiffUMambaSegLib.correction import ClickCorrection, Inputs  # noqa: E402
from DiffUMambaSegLib.correction_worker import CorrectionWorker, WorkerDied  # noqa: E402

SHAPE = (8, 12, 10)                         # k, j, i


def test_changed_slices_are_the_slice_indices_that_differ():
    before = np.zeros(SHAPE, np.uint8)
    after = before.copy()
    after[2, 5, 5] = 1
    after[6, 0, 9] = 1
    assert correction_scene.changed_slices(after, before) == [2, 6]
    assert correction_scene.changed_slices(before, before) == []
    assert correction_scene.changed_slices(after, None) == []
    assert correction_scene.changed_slices(after, after[1:]) == []


# --- the worker process ------------------------------------------------------------------------------------------
def script(code: str) -> list:
    return [sys.executable, "-u", "-c", code]


def test_worker_reads_never_block_and_take_the_ready_line():
    code = ("import json, sys, time\n"
            "time.sleep(1.0)\n"
            "print(json.dumps({'ready': True, 'seconds': 1.0}), flush=True)\n"
            "for line in sys.stdin:\n"
            "    r = json.loads(line)\n"
            "    if r.get('command') == 'quit': break\n"
            "    print(json.dumps({'id': r['id'], 'ok': True, 'echo': r['clicks']}), flush=True)\n")
    worker = CorrectionWorker(script(code)).start()
    started = time.monotonic()
    assert worker.replies() == [] and time.monotonic() - started < 0.2 and not worker.ready
    worker.send({"id": 7, "clicks": [1, 2]})                         # queued in the pipe while it loads
    deadline, replies = time.monotonic() + 30, []
    while not replies and time.monotonic() < deadline:
        replies = worker.replies()
        time.sleep(0.02)
    assert worker.ready and worker.load_seconds == 1.0 and replies == [{"id": 7, "ok": True, "echo": [1, 2]}]
    worker.stop().join(30)                                           # it quits when asked
    assert worker.returncode == 0 and worker.replies() == []


def test_a_dead_worker_names_the_commands_error_and_refuses_requests():
    code = ("import sys\n"
            "print('loading', file=sys.stderr)\n"
            "print('diffumamba serve: error: m.safetensors is not a correction model', file=sys.stderr)\n"
            "sys.exit(2)\n")
    worker = CorrectionWorker(script(code)).start()
    deadline = time.monotonic() + 30
    while not worker.ended and time.monotonic() < deadline:
        worker.replies()
        time.sleep(0.02)
    assert worker.ended and worker.returncode == 2
    assert worker.failure() == "m.safetensors is not a correction model"
    with pytest.raises(WorkerDied):
        worker.send({"id": 1})


def test_stop_ends_a_worker_that_ignores_quit_without_waiting_on_the_callers_thread():
    """K8: stopping (scene close, model change, cleanup) returned only after the grace twice (up to 10 s on the GUI
    thread); now it returns at once and a background thread ends the worker that ignores quit and SIGTERM."""
    code = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(600)\n"
    worker = CorrectionWorker(script(code)).start()
    time.sleep(0.5)                                                  # SIGTERM is ignored from here on
    started = time.monotonic()
    stopper = worker.stop(grace_seconds=1.0)
    returned = time.monotonic() - started
    assert returned < 0.2 and worker.returncode is None, returned   # not waited for on this thread
    stopper.join(30)
    assert worker.returncode == -9 and time.monotonic() - started < 10      # SIGKILL after twice the grace


# --- ClickCorrection with a scripted worker ----------------------------------------------------------------------
class ScriptedWorker:
    """Takes requests; answers when the test says so, writing the given mask on the image's grid."""

    def __init__(self):
        self.ready, self.sent, self._replies, self.returncode, self.stopped = False, [], [], None, False

    def send(self, request):
        if self.returncode is not None:
            raise WorkerDied("gone")
        self.sent.append(json.loads(json.dumps(request)))

    def answer(self, mask=None, error=None):
        request = self.sent[-1]
        if error:
            self._replies.append({"id": request["id"], "ok": False, "error": error})
            return
        image = sitk.ReadImage(request["image"])
        written = sitk.GetImageFromArray(mask.astype(np.uint8))
        written.CopyInformation(image)
        sitk.WriteImage(written, request["output"], True)           # compressed, as the real worker writes it
        current = sent_mask(request)
        self._replies.append({"id": request["id"], "ok": True, "output": request["output"], "volume_ml": 0.1,
                              "changed_voxels": int((current != mask).sum()), "clicks": len(request["clicks"]),
                              "fixed_slices": request["fixed_slices"], "seconds": 0.01})

    def replies(self):
        replies, self._replies = self._replies, []
        return replies

    @property
    def ended(self):
        return self.returncode is not None and not self._replies

    def failure(self):
        return "Traceback ... RuntimeError: boom"

    def stop(self):
        self.stopped = True
        if self.returncode is None:
            self.returncode = 0


def sent_mask(request):
    """The request's mask on its image's grid, as the worker reads it (``mask_io.read_mask``: a mask on
    another grid, here the segment cropped to its voxels, is resampled nearest-neighbour; none: empty)."""
    from diffumamba.mask_io import mask_on_grid

    image = sitk.ReadImage(request["image"])
    if "mask" not in request:
        return np.zeros(sitk.GetArrayFromImage(image).shape, np.uint8)
    return mask_on_grid(sitk.ReadImage(request["mask"]), image, "mask").astype(np.uint8)


@pytest.fixture
def corrected(tmp_path):
    """A CT-like volume with a GTV segment, two point lists, and a ClickCorrection with scripted workers."""
    scene = slicer.vtkMRMLScene()
    image = sitk.GetImageFromArray(np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE))
    image.SetSpacing((0.8, 0.9, 2.5))
    image.SetOrigin((10.0, -20.0, 30.0))
    gtv = np.zeros(SHAPE, np.uint8)
    gtv[3:5, 4:8, 3:7] = 1
    label = sitk.GetImageFromArray(gtv)
    label.CopyInformation(image)
    sitk.WriteImage(image, str(tmp_path / "ct.nrrd"))
    sitk.WriteImage(label, str(tmp_path / "gtv.nrrd"))
    volume = scene_io.read_volume(scene, tmp_path / "ct.nrrd", "CT")
    segmentation = scene_io.import_gtv(scene, tmp_path / "gtv.nrrd", volume, "CT GTV")
    include = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "include")
    exclude = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "exclude")
    (tmp_path / "model.safetensors").write_bytes(b"x")
    workers, undo, status = [], [], []

    def start(model, device):
        workers.append(ScriptedWorker())
        return workers[-1]

    logic = ClickCorrection(scene, start)
    logic.on_status = status.append
    segment_id = segmentation.GetSegmentation().GetNthSegmentID(0)

    def read(model=tmp_path / "model.safetensors"):
        return Inputs(segmentation, segment_id, volume, correction_scene.clicks(include, exclude), model, "cpu")

    def mask():
        return correction_scene.segment_mask(scene, segmentation, segment_id, volume)

    case = types.SimpleNamespace()
    case.__dict__.update(scene=scene, volume=volume, segmentation=segmentation, include=include, exclude=exclude,
                         logic=logic, read=read, mask=mask, workers=workers, undo=undo, status=status, gtv=gtv,
                         poll=lambda: logic.poll(undo.append))
    return case


def ras(volume, k, j, i):
    """The world (RAS) position of voxel (k, j, i)."""
    import vtk

    matrix = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)
    return matrix.MultiplyPoint((i, j, k, 1.0))[:3]


def test_a_click_sends_every_click_in_ras_and_its_result_replaces_the_segment(corrected):
    c = corrected
    c.include.AddControlPointWorld(*ras(c.volume, 4, 6, 5))
    assert c.logic.request(c.read) and len(c.workers) == 1
    request = c.workers[0].sent[0]
    assert request["coordinate_system"] == "RAS" and request["fixed_slices"] == []
    assert request["clicks"] == [{"point": pytest.approx(list(ras(c.volume, 4, 6, 5))), "label": "include"}]
    cropped = sitk.ReadImage(request["mask"])                                       # the segment's voxels only ...
    assert cropped.GetSize() == (4, 4, 2) and np.array_equal(sent_mask(request), c.gtv)   # ... on the CT's grid
    written = sitk.ReadImage(request["image"])
    assert written.GetSize() == SHAPE[::-1] and np.allclose(written.GetOrigin(), (10.0, -20.0, 30.0))
    assert c.poll() and c.mask().sum() == c.gtv.sum()                             # nothing yet: no reply
    grown = c.gtv.copy()
    grown[2:6, 3:9, 2:8] = 1
    c.workers[0].answer(grown)
    assert not c.poll()
    assert np.array_equal(c.mask(), grown) and c.undo == [c.segmentation]
    assert f"Applied to CT GTV › GTV: {int((grown != c.gtv).sum())} voxels changed" in c.status[-1]
    assert np.array_equal(c.logic.session.baseline, grown)                         # from the result, no export
    assert not c.logic.request(c.read) and len(c.workers[0].sent) == 1              # the same clicks: nothing new
    c.include.AddControlPointWorld(*ras(c.volume, 1, 1, 1))
    c.exclude.AddControlPointWorld(*ras(c.volume, 5, 7, 6))
    assert c.logic.request(c.read)
    assert [click["label"] for click in c.workers[0].sent[1]["clicks"]] == ["include", "include", "exclude"]
    assert sitk.ReadImage(c.workers[0].sent[1]["image"]).GetOrigin() == written.GetOrigin()
    assert c.workers[0].sent[1]["image"] == request["image"] and len(c.logic._images) == 1     # written once
    assert len(c.workers) == 1                                                    # one worker for the session


def test_preview_points_are_not_clicks(corrected):
    c = corrected
    index = c.include.AddControlPointWorld(*ras(c.volume, 4, 6, 5))
    c.include.SetNthControlPointPositionWorld(index, *ras(c.volume, 4, 6, 5), c.include.PositionPreview)
    assert not c.logic.request(c.read) and c.workers == []


def test_requests_during_one_in_flight_are_coalesced_with_the_latest_clicks(corrected):
    c = corrected
    c.include.AddControlPointWorld(*ras(c.volume, 4, 6, 5))
    c.logic.request(c.read)
    for k in (1, 2, 3):                                      # three more points while the first is answered
        c.exclude.AddControlPointWorld(*ras(c.volume, k, 1, 1))
        assert c.logic.request(c.read) and len(c.workers[0].sent) == 1
    first = c.gtv.copy()
    first[4, 4:8, 3:8] = 1
    c.workers[0].answer(first)
    assert c.poll()                                           # the first applied, the coalesced one sent
    assert len(c.workers[0].sent) == 2 and len(c.workers[0].sent[1]["clicks"]) == 4
    assert np.array_equal(sent_mask(c.workers[0].sent[1]), first)
    second = first.copy()
    second[1:4] = 0
    c.workers[0].answer(second)
    assert not c.poll() and np.array_equal(c.mask(), second) and len(c.undo) == 2


def test_a_refused_click_is_taken_back_and_changes_nothing(corrected):
    c = corrected
    c.include.AddControlPointWorld(*ras(c.volume, 4, 6, 5))
    c.logic.request(c.read)
    c.workers[0].answer(c.gtv | (np.indices(SHAPE)[0] == 4))
    c.poll()
    applied = c.mask()
    c.include.AddControlPointWorld(900.0, 0.0, 0.0)
    c.logic.request(c.read)
    c.workers[0].answer(error="request 2: click 2 at [-900.0, -0.0, 0.0] mm (LPS) lies outside the image")
    assert not c.poll()
    assert np.array_equal(c.mask(), applied) and len(c.undo) == 1
    assert c.include.GetNumberOfControlPoints() == 1                                  # the applied one stays
    assert c.status[-1].startswith("Not applied: request 2: click 2") and "1 new point(s) removed" in c.status[-1]


def test_a_segment_edited_while_the_request_ran_is_not_overwritten(corrected):
    c = corrected
    c.include.AddControlPointWorld(*ras(c.volume, 4, 6, 5))
    c.logic.request(c.read)
    content = c.segmentation.GetSegmentation()
    content.RemoveSegment(content.GetNthSegmentID(0))             # the user replaced the GTV meanwhile
    c.segmentation.GetSegmentation().AddSegment(scene_io.empty_segment("GTV"), "GTV-kept")
    c.workers[0].answer(np.ones(SHAPE, np.uint8))
    assert not c.poll() and c.undo == [] and "was not applied" in c.status[-1]


def test_slice_edits_are_the_slices_that_differ_from_the_last_result(corrected):
    c = corrected
    assert not c.logic.request(c.read, slice_edits=True) and c.status[-1].startswith("No slice differs")
    edited = c.gtv.copy()
    edited[3] = 0
    edited[3, 1:3, 1:3] = 1
    image = sitk.GetImageFromArray(edited)                        # the user's Paint / Erase on slice 3
    image.CopyInformation(sitk.ReadImage(c.volume.GetStorageNode().GetFileName()))
    path = Path(c.volume.GetStorageNode().GetFileName()).with_name("edited.nrrd")
    sitk.WriteImage(image, str(path))
    correction_scene.replace_segment(c.scene, c.segmentation, c.segmentation.GetSegmentation().GetNthSegmentID(0), path)
    assert c.logic.request(c.read, slice_edits=True)
    assert c.workers[0].sent[0]["fixed_slices"] == [3] and c.workers[0].sent[0]["clicks"] == []
    c.workers[0].answer(edited)
    c.poll()
    c.include.AddControlPointWorld(*ras(c.volume, 5, 6, 5))       # later clicks keep the drawn slice fixed
    c.logic.request(c.read)
    assert c.workers[0].sent[1]["fixed_slices"] == [3]


def test_a_dead_worker_is_reported_and_replaced_and_a_new_model_gets_a_new_worker(corrected, tmp_path):
    c = corrected
    c.include.AddControlPointWorld(*ras(c.volume, 4, 6, 5))
    c.logic.request(c.read)
    c.workers[0].returncode = -11                                 # crashed while answering
    assert not c.poll()
    assert c.status[-1] == "Not applied: the correction worker stopped: Traceback ... RuntimeError: boom"
    assert c.include.GetNumberOfControlPoints() == 1 and c.workers[0].stopped
    assert c.logic.request(c.read) and len(c.workers) == 2        # the same click again, to a new worker
    c.workers[1].answer(c.gtv)
    c.poll()
    (tmp_path / "other.safetensors").write_bytes(b"y")
    c.include.AddControlPointWorld(*ras(c.volume, 5, 6, 5))
    c.logic.request(lambda: c.read(tmp_path / "other.safetensors"))
    assert len(c.workers) == 3 and c.workers[1].stopped
    c.logic.stop()
    assert c.workers[2].stopped and c.logic.worker is None


def test_no_model_or_no_gtv_is_refused_before_anything_starts(corrected):
    c = corrected
    c.include.AddControlPointWorld(*ras(c.volume, 4, 6, 5))
    with pytest.raises(ValueError, match="Choose a correction model"):
        c.logic.request(lambda: Inputs(c.segmentation, "x", c.volume, correction_scene.clicks(c.include, None), None))
    with pytest.raises(ValueError, match="Segment or Propagate first"):
        c.logic.request(lambda: Inputs(None, "", None, [], Path("m")))
    assert c.workers == []


def test_an_undo_takes_back_the_points_placed_since_and_moves_a_moved_point_back(corrected):
    """Ctrl+Z through the editor's real vtkSegmentationHistory: the segment is back at the first result, so the
    exclude point placed since is removed and the include point dragged since goes back; the next click sends the
    first include point where it was and the new point, never the undone ones."""
    c = corrected
    segmentations = slicer.vtkSlicerSegmentationsModuleLogic()   # as at Slicer's start: registers the converter
    segmentations.SetMRMLScene(c.scene)                           # rules the history's copies need
    history = slicer.vtkSegmentationHistory()
    history.SetSegmentation(c.segmentation.GetSegmentation())

    def poll():
        return c.logic.poll(lambda node: history.SaveState())     # what the editor's saveStateForUndo does

    first = ras(c.volume, 4, 6, 5)
    c.include.AddControlPointWorld(*first)
    c.logic.request(c.read)
    one = c.gtv.copy()
    one[4, 4:8, 3:8] = 1
    c.workers[0].answer(one)
    poll()
    c.include.SetNthControlPointPositionWorld(0, *ras(c.volume, 2, 6, 5))     # the user drags it ...
    c.exclude.AddControlPointWorld(*ras(c.volume, 5, 7, 6))                   # ... and excludes
    c.logic.request(c.read)
    two = one.copy()
    two[2] = 1
    two[5] = 0
    c.workers[0].answer(two)
    poll()
    assert np.array_equal(c.mask(), two)
    assert c.logic.follow_undo(c.read) == 0                                   # nothing undone yet
    history.RestorePreviousState()                                            # Ctrl+Z
    assert np.array_equal(c.mask(), one)
    assert c.logic.follow_undo(c.read) == 2 and c.exclude.GetNumberOfControlPoints() == 0
    position = [0.0, 0.0, 0.0]
    c.include.GetNthControlPointPositionWorld(0, position)
    assert np.allclose(position, first)
    assert c.status[-1] == "Undone: the GTV is back to 1 click(s); 2 point(s) taken back."
    assert not c.logic.request(c.read)                                        # nothing new to send
    c.exclude.AddControlPointWorld(*ras(c.volume, 1, 1, 1))
    assert c.logic.request(c.read)
    sent = c.workers[0].sent[-1]
    assert [click["label"] for click in sent["clicks"]] == ["include", "exclude"] and len(c.workers[0].sent) == 3
    assert sent["clicks"][0]["point"] == pytest.approx(list(first))
    assert np.array_equal(sent_mask(sent), one)


# --- the review's W3 / W6 / W14 ----------------------------------------------------------------------------------
class RecordingSegmentationsLogic:
    """``slicer.vtkSlicerSegmentationsModuleLogic`` with its image-creating and exporting calls recorded."""

    def __init__(self):
        self.real, self.images, self.exports = slicer.vtkSlicerSegmentationsModuleLogic, [], []

    def __getattr__(self, name):
        return getattr(self.real, name)

    def CreateOrientedImageDataFromVolumeNode(self, *args):
        image = self.real.CreateOrientedImageDataFromVolumeNode(*args)
        self.images.append(image)
        return image

    def ExportSegmentsToLabelmapNode(self, segmentation, ids, labelmap, reference=None, *args):
        ok = self.real.ExportSegmentsToLabelmapNode(segmentation, ids, labelmap, reference, *args) \
            if reference is not None else self.real.ExportSegmentsToLabelmapNode(segmentation, ids, labelmap)
        self.exports.append(labelmap.GetImageData().GetDimensions())
        return ok


def test_an_applied_click_keeps_no_image_alive_and_exports_only_the_segments_voxels(corrected, monkeypatch):
    """W3: the image ``CreateOrientedImageDataFromVolumeNode`` returns is owned by the caller; after a click only this
    test's reference holds it (reference count 1; before the fix 2: one CT-sized image leaked per click). W6: a click
    exports the segment once, cropped to its voxels, and its result is the next baseline (before: two full-grid
    exports per click)."""
    c = corrected
    recording = RecordingSegmentationsLogic()
    monkeypatch.setattr(slicer, "vtkSlicerSegmentationsModuleLogic", recording)
    c.logic.restart(c.read)
    recording.exports.clear()
    c.include.AddControlPointWorld(*ras(c.volume, 4, 6, 5))
    c.logic.request(c.read)
    grown = c.gtv.copy()
    grown[2:6, 3:9, 2:8] = 1
    c.workers[0].answer(grown)
    c.poll()
    assert len(recording.images) == 1 and recording.images[0].GetReferenceCount() == 1
    assert recording.exports == [(4, 4, 2)]                     # the GTV's box only, on the click (none after)
    assert np.array_equal(c.mask(), grown) and np.array_equal(c.logic.session.baseline, grown)


def test_deleting_the_first_click_of_a_gtv_made_from_nothing_empties_it_again(corrected):
    """W14 from an empty segment (Segment from a click): the request carries no mask, and deleting its point clears
    the segment again; deleting a later point goes back to the mask sent with it."""
    c = corrected
    segment_id = c.segmentation.GetSegmentation().GetNthSegmentID(0)
    correction_scene.clear_segment(c.segmentation, segment_id)
    c.logic.restart(c.read)
    c.include.AddControlPointWorld(*ras(c.volume, 4, 6, 5))
    c.logic.request(c.read)
    assert "mask" not in c.workers[0].sent[0]
    c.workers[0].answer(c.gtv)
    c.poll()
    c.exclude.AddControlPointWorld(*ras(c.volume, 4, 5, 4))
    c.logic.request(c.read)
    smaller = c.gtv.copy()
    smaller[3] = 0
    c.workers[0].answer(smaller)
    c.poll()
    c.exclude.RemoveAllControlPoints()                            # the exclude point: back to the first result
    assert not c.logic.request(c.read)
    assert np.array_equal(c.mask(), c.gtv) and len(c.workers[0].sent) == 2
    c.include.RemoveAllControlPoints()                            # the first click: empty again
    assert not c.logic.request(c.read)
    assert c.mask().sum() == 0 and c.status[-1].startswith("Point deleted: CT GTV › GTV is back to before that click")
    c.include.AddControlPointWorld(*ras(c.volume, 4, 6, 5))       # and the next click starts from nothing
    assert c.logic.request(c.read) and "mask" not in c.workers[0].sent[-1]
