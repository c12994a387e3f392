"""Click correction in the module, through the conformance harness (Slicer 5.12's Python layer, real MRML, the
emulated Markups logic), with a scripted worker in place of ``diffumamba serve`` so every way a request can end is
under the test's control (the real worker is in test_slicer_correction.py). The readiness review's findings:

- W1: the Include / Exclude lists never stay Slicer's active place list, and a point placed from the Markups toolbar
  (outside the module, or into the module's list while the module is not shown) never corrects the GTV.
- W5: corrections go to the segmentation the embedded Segment Editor shows, and the status line names it.
- W6: nothing is done inside the markups event (the request waits for the event loop); the Python packages are
  checked when Include is pressed, and an installer's error goes to the status line.
- W14: deleting a point takes back what its click did.
- After every way a request can end (applied, refused, worker died, stopped, scene closed, module left, a new
  session) the next click is sent and applied.

Unchecked here: Qt's real event loop (the harness runs zero-delay single shots and timers when the test processes
events), picking in real views, the real Markups toolbar widgets (``slicer_conformance.markups.place_from_toolbar``
does to MRML what they do).
"""

import subprocess
import types

import numpy as np
import pytest
import SimpleITK as sitk

import test_slicer_correction_logic
from test_slicer_correction import use_correction_model
from test_slicer_module_conformance import MODULE, pythonslicer, session  # noqa: F401

SHAPE = (10, 16, 14)                                    # k, j, i


class ScriptedWorker(test_slicer_correction_logic.ScriptedWorker):
    """Takes requests; answers when the test says so: the mask it was sent (as the real worker reads it: on the
    image's grid, empty when none was sent) with one more plane of voxels per click, or an error."""

    def __init__(self):
        super().__init__()
        self.ready = True

    def send(self, request):
        from DiffUMambaSegLib.correction_worker import WorkerDied   # the session's own import of the Lib

        if self.returncode is not None:
            raise WorkerDied("gone")
        self.sent.append(request)

    def answer(self, error=None):
        from diffumamba.mask_io import mask_on_grid

        request = self.sent[-1]
        if error:
            self._replies.append({"id": request["id"], "ok": False, "error": error})
            return None
        image = sitk.ReadImage(request["image"])
        current = (mask_on_grid(sitk.ReadImage(request["mask"]), image, "mask") if "mask" in request
                   else np.zeros(SHAPE, bool)).astype(np.uint8)
        result = current.copy()
        result[:, 1 + len(request["clicks"]), 2:12] = 1         # a plane of voxels per click: each answer differs
        written = sitk.GetImageFromArray(result)
        written.CopyInformation(image)
        sitk.WriteImage(written, request["output"], True)
        self._replies.append({"id": request["id"], "ok": True, "output": request["output"], "volume_ml": 0.1,
                              "changed_voxels": int((current != result).sum()), "clicks": len(request["clicks"]),
                              "fixed_slices": request["fixed_slices"], "seconds": 0.01})
        return result


def make_case(session, tmp_path, name="CT GTV"):
    """The module shown with a CT, a GTV (a box) in the output segmentation shown in the editor, the "Checkpoint or
    zip" correction model, and scripted workers."""
    from DiffUMambaSegLib import scene as scene_io

    widget = session.show_module("DiffUMambaSeg")
    tmp_path.mkdir(parents=True, exist_ok=True)
    ct_file, gtv_file = tmp_path / "ct.nrrd", tmp_path / f"{name}.nrrd"
    if not ct_file.is_file():
        image = sitk.GetImageFromArray(np.random.default_rng(0).integers(-900, 100, SHAPE).astype(np.int16))
        image.SetSpacing((0.9, 0.8, 2.5))
        image.SetOrigin((10.0, -20.0, 30.0))
        sitk.WriteImage(image, str(ct_file))
    gtv = np.zeros(SHAPE, np.uint8)
    gtv[3:6, 5:9, 4:9] = 1
    label = sitk.GetImageFromArray(gtv)
    label.CopyInformation(sitk.ReadImage(str(ct_file)))
    sitk.WriteImage(label, str(gtv_file))
    ct = session.scene.GetFirstNodeByName("CT") or scene_io.read_volume(session.scene, ct_file, "CT")
    segmentation = scene_io.import_gtv(session.scene, gtv_file, ct, name)
    parameters = widget.logic.getParameterNode()
    parameters.outputSegmentation = segmentation
    widget.editor.show(segmentation, ct)
    widget.panel.onResult()                                  # what the panel does when a run's GTV arrives
    (tmp_path / "click.safetensors").write_bytes(b"a click model (the scripted worker never reads it)")
    use_correction_model(widget, tmp_path / "click.safetensors")
    workers = []

    def start(model, device):
        workers.append(ScriptedWorker())
        return workers[-1]

    widget.logic.correction.start_worker = start
    return types.SimpleNamespace(widget=widget, ui=widget.ui, ct=ct, segmentation=segmentation, gtv=gtv,
                                 parameters=parameters, workers=workers, correction=widget.logic.correction)


def ras(volume, k, j, i):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)
    return matrix.MultiplyPoint((i, j, k, 1.0))[:3]


def mask(segmentation, ct, name="GTV"):
    import slicer

    segment_id = segmentation.GetSegmentation().GetSegmentIdBySegmentName(name)
    return slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segment_id, ct).astype(np.uint8)


def place(session, c, which, k=4, j=6, i=6):
    """Press Include / Exclude (place mode on), click in a view, and let the event loop run the queued request."""
    getattr(c.ui, f"{which}PlaceWidget").setPlaceModeEnabled(True)
    session.place_point(ras(c.ct, k, j, i))
    session.process_events()


def answered(session, c, error=None):
    """The worker answers the last request; the module's timer applies it."""
    result = c.workers[-1].answer(error)
    session.run_until(lambda: not c.correction.busy, 30)
    assert not session.slot_errors, session.slot_errors
    return result


def click(session, c, which="include", k=4, j=6, i=6):
    place(session, c, which, k, j, i)
    assert c.correction.busy, c.ui.correctionStatusLabel.text
    return answered(session, c)


def sent_count(c):
    return sum(len(worker.sent) for worker in c.workers)


# --- W1 ------------------------------------------------------------------------------------------------------------
def test_the_emulated_markups_logic_makes_each_new_markups_node_the_active_place_list(session):
    """The harness as Slicer with its Markups module (vtkSlicerMarkupsLogic.cxx:436-481): a markups node added to the
    scene becomes the active place list with its class, except while the scene batch-processes; others do not."""
    scene = session.scene
    selection = scene.GetNodeByID("vtkMRMLSelectionNodeSingleton")
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "points")
    assert selection.GetActivePlaceNodeID() == points.GetID()
    scene.StartState(scene.BatchProcessState)
    scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "added in a batch")
    scene.EndState(scene.BatchProcessState)
    scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "not markups")
    assert selection.GetActivePlaceNodeID() == points.GetID()
    line = scene.AddNewNodeByClass("vtkMRMLMarkupsLineNode", "line")
    assert selection.GetActivePlaceNodeID() == line.GetID()
    assert selection.GetActivePlaceNodeClassName() == "vtkMRMLMarkupsLineNode"


def test_the_point_lists_never_stay_active_and_toolbar_points_never_correct_the_gtv(session, tmp_path):
    scene = session.scene
    selection = scene.GetNodeByID("vtkMRMLSelectionNodeSingleton")
    mine = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "my landmarks")      # the user's own list ...
    assert selection.GetActivePlaceNodeID() == mine.GetID()       # ... is active, as the Markups logic makes it
    c = make_case(session, tmp_path)                              # the module makes its two lists ...
    include, exclude = c.parameters.includePoints, c.parameters.excludePoints
    assert selection.GetActivePlaceNodeID() == mine.GetID()       # ... and puts the user's list back
    half = mask(c.segmentation, c.ct)

    session.leave_module()
    session.place_from_toolbar(ras(c.ct, 4, 6, 6))                # shown and left: the toolbar places into "mine"
    session.process_events()
    assert mine.GetNumberOfControlPoints() == 1 and include.GetNumberOfControlPoints() == 0
    assert exclude.GetNumberOfControlPoints() == 0 and c.workers == []

    session.show_module("DiffUMambaSeg")
    first = click(session, c, "include")                          # the module's own clicks work
    assert np.array_equal(mask(c.segmentation, c.ct), first) and sent_count(c) == 1
    session.leave_module()                                        # Include was active: no longer
    assert selection.GetActivePlaceNodeID() not in (include.GetID(), exclude.GetID())
    node, _ = session.place_from_toolbar(ras(c.ct, 2, 2, 2))      # the toolbar, in another module
    session.process_events()
    assert node.GetID() not in (include.GetID(), exclude.GetID())
    session.markups_logic.set_active_list(exclude)                # even into the module's own list ...
    session.place_from_toolbar(ras(c.ct, 5, 7, 7))
    session.run_until(lambda: True)
    assert exclude.GetNumberOfControlPoints() == 1                # ... while the module is not shown:
    assert sent_count(c) == 1 and not c.correction.busy           # no request,
    assert np.array_equal(mask(c.segmentation, c.ct), first)      # the GTV as it was
    assert not np.array_equal(first, half)


# --- W6 ------------------------------------------------------------------------------------------------------------
def test_a_click_is_sent_after_its_event_and_packages_are_checked_when_include_is_pressed(session, tmp_path):
    c = make_case(session, tmp_path)
    checks = []
    c.correction.ensure_dependencies = lambda: checks.append(c.correction.busy) or True
    c.ui.includePlaceWidget.setPlaceModeEnabled(True)             # the user presses Include
    assert checks == [False]
    session.place_point(ras(c.ct, 4, 6, 6))                       # the click's markups event returns ...
    assert c.workers == [] and not c.correction.busy              # ... with nothing done inside it
    session.process_events()                                      # the zero-delay single shot sends it
    assert len(c.workers) == 1 and len(c.workers[0].sent) == 1 and checks == [False]
    answered(session, c)
    assert c.ui.correctionStatusLabel.text.startswith("Applied to CT GTV › GTV: ")


def test_an_installer_error_at_include_goes_to_the_status_line_and_place_mode_goes_off(session, tmp_path):
    c = make_case(session, tmp_path)

    def offline():
        raise subprocess.CalledProcessError(1, ["pip", "install", "diffumamba"])

    c.correction.ensure_dependencies = offline
    c.ui.excludePlaceWidget.setPlaceModeEnabled(True)
    assert not session.slot_errors, session.slot_errors
    status = c.ui.correctionStatusLabel.text
    assert status.startswith("Could not install the correction's Python packages: Command '['pip'") and \
        "non-zero exit status 1" in status
    assert not c.ui.excludePlaceWidget.placeModeEnabled and c.workers == []
    c.correction.ensure_dependencies = lambda: True                # online again: the next press works
    assert np.array_equal(mask(c.segmentation, c.ct), c.gtv)
    click(session, c, "exclude")
    assert len(c.workers) == 1


# --- W5 ------------------------------------------------------------------------------------------------------------
def test_corrections_go_to_the_segmentation_the_editor_shows(session, tmp_path):
    c = make_case(session, tmp_path, "CT GTV")
    second = make_case(session, tmp_path, "Other GTV")             # a second segmentation on the same CT
    other, c.workers = second.segmentation, second.workers
    c.widget.editor.show(c.segmentation, c.ct)
    editor = c.ui.segmentEditorWidget
    exported = c.parameters.outputSegmentation
    assert exported is other                                      # the Export selector holds the second one ...
    editor.setSegmentationNode(c.segmentation)                    # ... the editor's own selector shows the first
    before_other = mask(other, c.ct)
    result = click(session, c, "include")
    assert np.array_equal(mask(c.segmentation, c.ct), result)     # the shown one changed
    assert np.array_equal(mask(other, c.ct), before_other)        # the Export selector's did not
    assert c.ui.correctionStatusLabel.text.startswith("Applied to CT GTV › GTV: ")
    editor.undo()                                                 # undo tracking follows the shown segmentation
    assert np.array_equal(mask(c.segmentation, c.ct), c.gtv)
    assert c.parameters.includePoints.GetNumberOfControlPoints() == 0

    place(session, c, "include")                                  # a request for "CT GTV" ...
    editor.setSegmentationNode(other)                             # ... and the user switches the editor meanwhile
    answered(session, c)
    assert np.array_equal(mask(c.segmentation, c.ct), c.gtv) and np.array_equal(mask(other, c.ct), before_other)
    assert c.ui.correctionStatusLabel.text.startswith("Not applied: the Segment Editor no longer shows CT GTV")
    assert editor.segmentationNode() is other                     # the editor was not switched back
    result = click(session, c, "exclude", 5, 7, 7)                # the next click corrects the shown one
    assert np.array_equal(mask(other, c.ct), result) and np.array_equal(mask(c.segmentation, c.ct), c.gtv)
    assert c.ui.correctionStatusLabel.text.startswith("Applied to Other GTV › GTV: ")


# --- W14 -----------------------------------------------------------------------------------------------------------
def test_deleting_a_point_takes_back_what_its_click_did(session, tmp_path):
    c = make_case(session, tmp_path)
    include = c.parameters.includePoints
    one = click(session, c, "include", 4, 6, 6)
    two = click(session, c, "include", 4, 7, 7)
    assert not np.array_equal(one, two)
    c.ui.includePlaceWidget.deleteLastPoint()                     # the place widget's Delete last point
    session.process_events()
    assert np.array_equal(mask(c.segmentation, c.ct), one)        # back to before that click ...
    assert sent_count(c) == 2 and not c.correction.busy           # ... nothing to send again
    assert c.ui.correctionStatusLabel.text.startswith("Point deleted: CT GTV › GTV is back to before that click")

    click(session, c, "include", 4, 7, 7)
    click(session, c, "include", 4, 8, 8)
    include.RemoveNthControlPoint(1)                              # a point in the middle (the Markups module)
    session.process_events()
    assert np.array_equal(mask(c.segmentation, c.ct), one)        # back to before it, and the rest sent again
    assert c.correction.busy and len(c.workers[-1].sent[-1]["clicks"]) == 2
    again = answered(session, c)
    assert np.array_equal(mask(c.segmentation, c.ct), again)

    c.ui.includePlaceWidget.deleteAllPoints()                     # Delete all: the GTV as the session began
    session.process_events()
    assert np.array_equal(mask(c.segmentation, c.ct), c.gtv) and not c.correction.busy


def test_deleting_a_point_after_a_hand_edit_keeps_the_edit(session, tmp_path):
    import slicer

    c = make_case(session, tmp_path)
    click(session, c, "include", 4, 6, 6)
    edited = mask(c.segmentation, c.ct)
    edited[0] = 1                                                 # Paint on slice 0
    segment_id = c.segmentation.GetSegmentation().GetSegmentIdBySegmentName("GTV")
    slicer.util.updateSegmentBinaryLabelmapFromArray(edited, c.segmentation, segment_id, c.ct)
    c.ui.includePlaceWidget.deleteLastPoint()
    session.process_events()
    assert np.array_equal(mask(c.segmentation, c.ct), edited)
    assert c.ui.correctionStatusLabel.text.startswith("The GTV was edited since the last correction")


# --- every way a request can end, then the next click --------------------------------------------------------------
def next_click_works(session, c, k=4, j=6, i=6):
    before = sent_count(c)
    result = click(session, c, "include", k, j, i)
    assert sent_count(c) == before + 1
    assert np.array_equal(mask(c.segmentation, c.ct), result), c.ui.correctionStatusLabel.text
    assert c.ui.correctionStatusLabel.text.startswith("Applied"), c.ui.correctionStatusLabel.text


def test_the_next_click_works_after_every_way_a_request_can_end(session, tmp_path):
    c = make_case(session, tmp_path)
    next_click_works(session, c)                                  # applied

    place(session, c, "include", 4, 2, 2)                        # refused by the worker
    answered(session, c, error="click 2 lies outside the lungs")
    assert c.ui.correctionStatusLabel.text.startswith("Not applied: click 2 lies outside the lungs")
    next_click_works(session, c, 4, 7, 7)

    place(session, c, "include", 4, 8, 8)                         # the worker dies while answering
    c.workers[-1].returncode = -11
    session.run_until(lambda: not c.correction.busy, 30)
    assert c.ui.correctionStatusLabel.text == "Not applied: the correction worker stopped: Traceback ... RuntimeError: boom"
    next_click_works(session, c, 4, 9, 9)
    assert len(c.workers) == 2

    place(session, c, "include", 4, 10, 10)                       # stopped (a Segment run frees the GPU)
    c.correction.stop()
    session.run_until(lambda: not c.widget.correction.timer.isActive(), 30)
    assert c.workers[-1].stopped and not c.correction.busy
    next_click_works(session, c, 4, 11, 11)
    assert len(c.workers) == 3

    place(session, c, "include", 4, 12, 12)                       # a new AI result (a new session) meanwhile
    waiting = mask(c.segmentation, c.ct)
    c.widget.panel.onResult()
    c.workers[-1].answer()
    session.run_until(lambda: not c.widget.correction.timer.isActive(), 30)
    assert np.array_equal(mask(c.segmentation, c.ct), waiting)   # the old session's answer is dropped
    assert c.parameters.includePoints.GetNumberOfControlPoints() == 0
    next_click_works(session, c, 4, 6, 6)

    place(session, c, "include", 4, 7, 7)                         # the module left while the worker answers
    session.leave_module()
    waiting = mask(c.segmentation, c.ct)
    result = c.workers[-1].answer()
    session.run_until(lambda: True)
    assert c.correction.busy and np.array_equal(mask(c.segmentation, c.ct), waiting)   # nothing while away
    session.show_module("DiffUMambaSeg")
    session.run_until(lambda: not c.correction.busy, 30)
    assert np.array_equal(mask(c.segmentation, c.ct), result)                   # applied when shown again
    next_click_works(session, c, 4, 8, 8)

    place(session, c, "include", 4, 9, 9)                         # File > Close Scene while the worker answers
    worker = c.workers[-1]
    session.close_scene()
    assert worker.stopped and not c.correction.busy and c.widget.correction.timer.isActive() is False
    c = make_case(session, tmp_path / "next patient")
    next_click_works(session, c)
    assert not session.slot_errors, session.slot_errors
