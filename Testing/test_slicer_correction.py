"""Correct a GTV with a few clicks (issue 18), the module file run through the conformance harness against Slicer
5.12's Python layer and real MRML, with the REAL ``diffumamba serve --stdio`` worker and a correction model trained
briefly on the phantoms (its answers are what they are: the tests check transport, undo and bookkeeping, voxel for
voxel against the worker's own output files, not accuracy).

Points are placed the way a user does it: the Include / Exclude place widget switches Slicer into persistent place
mode (the real interaction and selection nodes), and a click in a view is what the C++ markups widgets do to the
real point list (``slicer_conformance.markups``). Masks are read with ``slicer.util.arrayFromSegmentBinaryLabelmap``
and hand edits written with ``slicer.util.updateSegmentBinaryLabelmapFromArray`` (Slicer's own functions, not the
module's).

Unchecked here: Qt's event loop (timers fire when the test processes events), the markups widgets' rendering and
picking in real views, keyboard Ctrl+Z (the editor's undo slot is called instead: the real vtkSegmentationHistory
restores the segment and its events reach the module), a worker on Windows.
"""

import os
import signal
import time

import numpy as np
import SimpleITK as sitk

from test_correct_command import model as correction_model  # noqa: F401 - the phantoms' correction model fixture
from test_correct_command import tumour_point
from test_slicer_module_conformance import (MODULE, RUN_S, choose_checkpoint, load_ct, pythonslicer,  # noqa: F401
                                            segment_and_wait, session, tiny_model)
from slicer_conformance import SlicerSession


def phantom_ct(session, phantoms):
    return load_ct(session, phantoms / "imagesTr" / "c0_0000.nii.gz")


def ras_of_tumour(phantoms, shift=(0.0, 0.0, 0.0)):
    """The phantom tumour's centre in world (RAS) mm, moved by ``shift``."""
    lps, _ = tumour_point(phantoms)
    return [-lps[0] + shift[0], -lps[1] + shift[1], lps[2] + shift[2]]


def gtv_array(segmentation, ct):
    import slicer

    segment_id = segmentation.GetSegmentation().GetSegmentIdBySegmentName("GTV")
    return slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segment_id, ct).astype(np.uint8)


def start_from_half_gtv(session, widget, phantoms, ct, tmp_path):
    """The phantom's GTV with its upper half missing, as the output of a finished run (what Segment leaves)."""
    import sys

    sys.path.insert(0, str(MODULE))
    from DiffUMambaSegLib import scene as scene_io

    label = sitk.ReadImage(str(phantoms / "labelsTr" / "c0.nii.gz"))
    array = sitk.GetArrayFromImage(label)
    array[int(np.argwhere(array > 0)[:, 0].mean()):] = 0
    half = sitk.GetImageFromArray(array)
    half.CopyInformation(label)
    sitk.WriteImage(half, str(tmp_path / "half.nrrd"))
    segmentation = scene_io.import_gtv(session.scene, tmp_path / "half.nrrd", ct, "CT GTV")
    widget.logic.getParameterNode().outputSegmentation = segmentation
    widget.editor.show(segmentation, ct)
    widget.panel.onResult()                          # what the panel does when a run's GTV arrives
    return segmentation


def use_correction_model(widget, checkpoint):
    """The model list's last item ("Checkpoint or zip": not the catalog's click model), then the file."""
    combo = widget.ui.correctionModelComboBox
    combo.currentIndex = combo.count - 1
    assert widget.ui.correctionModelPathLineEdit.enabled
    widget.ui.correctionModelPathLineEdit.currentPath = str(checkpoint)
    widget.ui.deviceComboBox.currentIndex = 1                        # cpu


def click(session, widget, which, ras):
    """Press Include or Exclude (place mode on), click at ``ras``, and wait for the result through the timer."""
    getattr(widget.ui, f"{which}PlaceWidget").setPlaceModeEnabled(True)
    session.place_point(ras)
    session.run_until(lambda: not widget.logic.correction.busy, RUN_S)
    assert not session.slot_errors, session.slot_errors
    return widget.logic.correction.last_reply


def output_array(reply):
    return sitk.GetArrayFromImage(sitk.ReadImage(reply["output"]))


def test_include_then_exclude_after_segment_each_update_the_gtv_as_one_undo_step(session, correction_model,
                                                                                  tiny_model):
    checkpoint, phantoms = correction_model
    widget = session.show_module("DiffUMambaSeg")
    ui, editor = widget.ui, widget.ui.segmentEditorWidget
    ct = phantom_ct(session, phantoms)
    ui.inputVolumeSelector.setCurrentNode(ct)
    choose_checkpoint(ui, tiny_model)
    use_correction_model(widget, checkpoint)
    segment_and_wait(session, widget)                                 # a real Segment run makes the GTV
    parameters = widget.logic.getParameterNode()
    segmentation = parameters.outputSegmentation
    segment_id = segmentation.GetSegmentation().GetSegmentIdBySegmentName("GTV")
    include, exclude = parameters.includePoints, parameters.excludePoints
    assert ui.includePlaceWidget.currentNode() is include and ui.excludePlaceWidget.currentNode() is exclude
    colours = {tuple(round(c, 3) for c in node.GetDisplayNode().GetSelectedColor()) for node in (include, exclude)}
    assert len(colours) == 2 and (1.0, 0.0, 0.0) not in colours       # two colours, neither the GTV's red

    ui.includePlaceWidget.setPlaceModeEnabled(True)                   # the user presses Include
    interaction = session.scene.GetNodeByID("vtkMRMLInteractionNodeSingleton")
    assert interaction.GetCurrentInteractionMode() == interaction.Place and interaction.GetPlaceModePersistence()
    before = gtv_array(segmentation, ct)
    started = time.monotonic()
    session.place_point(ras_of_tumour(phantoms))
    assert not widget.logic.correction.busy              # nothing inside the markups event: queued for the loop
    session.process_events()
    returned = time.monotonic() - started
    assert widget.logic.correction.busy and widget.correction.timer.isActive() and returned < 2.0, returned
    assert np.array_equal(gtv_array(segmentation, ct), before)
    assert ui.correctionStatusLabel.text.startswith("Correcting")
    session.run_until(lambda: not widget.logic.correction.busy, RUN_S)
    assert not session.slot_errors and not widget.correction.timer.isActive()
    first = widget.logic.correction.last_reply
    after_include = gtv_array(segmentation, ct)
    assert np.array_equal(after_include, output_array(first)) and first["clicks"] == 1
    assert first["changed_voxels"] == int((after_include != before).sum()) > 0
    assert ui.correctionStatusLabel.text.startswith(f"Applied to CT GTV › GTV: {first['changed_voxels']} voxels")
    assert interaction.GetCurrentInteractionMode() == interaction.Place              # persistent: still placing
    pid = widget.logic.correction.worker.pid

    second = click(session, widget, "exclude", ras_of_tumour(phantoms, (3.0, 0.0, -4.0)))
    after_exclude = gtv_array(segmentation, ct)
    assert np.array_equal(after_exclude, output_array(second)) and second["clicks"] == 2
    assert second["changed_voxels"] == int((after_exclude != after_include).sum()) > 0
    assert widget.logic.correction.worker.pid == pid and widget.logic.correction.worker_starts == 1

    editor.undo()                                                     # Ctrl+Z: exactly the exclude click ...
    assert np.array_equal(gtv_array(segmentation, ct), after_include)
    assert exclude.GetNumberOfControlPoints() == 0 and include.GetNumberOfControlPoints() == 1   # ... and its point
    assert ui.correctionStatusLabel.text.startswith("Undone: the GTV is back to 1 click(s); 1 point(s) taken back")
    third = click(session, widget, "include", ras_of_tumour(phantoms, (0.0, 0.0, 3.0)))
    assert third["clicks"] == 2 and third["id"] != second["id"]      # the undone click is not sent again
    assert np.array_equal(gtv_array(segmentation, ct), output_array(third))
    editor.undo()                                                     # the third click, then the first
    assert np.array_equal(gtv_array(segmentation, ct), after_include) and include.GetNumberOfControlPoints() == 1
    editor.undo()
    assert np.array_equal(gtv_array(segmentation, ct), before)
    assert include.GetNumberOfControlPoints() == exclude.GetNumberOfControlPoints() == 0
    segment = segmentation.GetSegmentation().GetSegment(segment_id)   # still the same, ordinary segment
    assert segment.GetName() == "GTV" and segment.GetColor() == (1.0, 0.0, 0.0)
    import slicer

    edited = after_exclude.copy()
    edited[:, :, :3] = 1
    slicer.util.updateSegmentBinaryLabelmapFromArray(edited, segmentation, segment_id, ct)
    assert np.array_equal(gtv_array(segmentation, ct), edited)

    session.answer(True)                             # a new run over the corrected GTV asks first ...
    segment_and_wait(session, widget)
    assert len(session.dialogs) == 1 and "was edited" in session.dialogs[0]["text"]
    assert include.GetNumberOfControlPoints() == exclude.GetNumberOfControlPoints() == 0   # ... and starts afresh
    assert ui.correctionStatusLabel.text == ""


def test_a_point_outside_the_image_shows_the_workers_error_and_changes_nothing(session, correction_model, tmp_path):
    checkpoint, phantoms = correction_model
    widget = session.show_module("DiffUMambaSeg")
    ct = phantom_ct(session, phantoms)
    segmentation = start_from_half_gtv(session, widget, phantoms, ct, tmp_path)
    use_correction_model(widget, checkpoint)
    click(session, widget, "include", ras_of_tumour(phantoms))
    applied = gtv_array(segmentation, ct)
    session.place_point([900.0, 0.0, 0.0])                            # still in place mode
    session.run_until(lambda: not widget.logic.correction.busy, RUN_S)
    status = widget.ui.correctionStatusLabel.text
    assert status.startswith("Not applied: request 2: click 2 at [-900.0") and "lies outside the image" in status
    assert "1 new point(s) removed" in status and not session.slot_errors
    assert np.array_equal(gtv_array(segmentation, ct), applied)
    assert widget.logic.getParameterNode().includePoints.GetNumberOfControlPoints() == 1
    widget.ui.segmentEditorWidget.undo()                              # the refused click made no undo step
    assert int(gtv_array(segmentation, ct).sum()) == int(sitk.GetArrayFromImage(
        sitk.ReadImage(str(tmp_path / "half.nrrd"))).sum())


def test_apply_my_slice_edits_keeps_the_edited_slice_exactly(session, correction_model, tmp_path):
    import slicer

    checkpoint, phantoms = correction_model
    widget = session.show_module("DiffUMambaSeg")
    ui = widget.ui
    ct = phantom_ct(session, phantoms)
    segmentation = start_from_half_gtv(session, widget, phantoms, ct, tmp_path)
    use_correction_model(widget, checkpoint)
    click(session, widget, "include", ras_of_tumour(phantoms))
    ui.applySliceEditsButton.click()                                  # nothing edited yet
    assert ui.correctionStatusLabel.text.startswith("No slice differs") and not widget.logic.correction.busy
    result = gtv_array(segmentation, ct)
    k = int(np.argwhere(result > 0)[:, 0].mean()) if result.any() else result.shape[0] // 2
    edited = result.copy()
    edited[k] = 0
    edited[k, 2:6, 3:9] = 1                                           # drawn by hand: a small rectangle
    segment_id = segmentation.GetSegmentation().GetSegmentIdBySegmentName("GTV")
    slicer.util.updateSegmentBinaryLabelmapFromArray(edited, segmentation, segment_id, ct)
    ui.applySliceEditsButton.click()
    assert widget.logic.correction.busy
    session.run_until(lambda: not widget.logic.correction.busy, RUN_S)
    reply = widget.logic.correction.last_reply
    corrected = gtv_array(segmentation, ct)
    assert reply["fixed_slices"] == [k] and not session.slot_errors
    assert np.array_equal(corrected[k], edited[k]) and np.array_equal(corrected, output_array(reply))
    nxt = click(session, widget, "exclude", ras_of_tumour(phantoms, (0.0, 0.0, 4.0)))
    assert nxt["fixed_slices"] == [k] and np.array_equal(gtv_array(segmentation, ct)[k], edited[k])


def test_one_worker_per_session_restarted_when_dead_and_stopped_on_close_and_cleanup(
        tmp_path, pythonslicer, correction_model, tiny_model):
    checkpoint, phantoms = correction_model
    with SlicerSession(module_dir=MODULE, work=tmp_path / "slicer", testing=False, slot_exceptions="record") as session:
        session.load_module("DiffUMambaSeg")
        widget = session.show_module("DiffUMambaSeg")
        ct = phantom_ct(session, phantoms)
        segmentation = start_from_half_gtv(session, widget, phantoms, ct, tmp_path)
        use_correction_model(widget, tiny_model)                     # a segmentation model: the worker refuses it
        half = gtv_array(segmentation, ct)
        click(session, widget, "include", ras_of_tumour(phantoms))
        status = widget.ui.correctionStatusLabel.text
        assert status.startswith("Not applied: the correction worker stopped: ")
        assert "is not a correction model (its task is segmentation)" in status
        assert np.array_equal(gtv_array(segmentation, ct), half)
        use_correction_model(widget, checkpoint)
        click(session, widget, "include", ras_of_tumour(phantoms, (1.0, 1.0, 0.0)))
        correction = widget.logic.correction
        assert correction.worker_starts == 2 and correction.last_reply["clicks"] == 2   # the kept point went too
        first = correction.worker.process
        os.kill(first.pid, signal.SIGKILL)                            # the worker dies between two clicks
        first.wait(30)
        click(session, widget, "exclude", ras_of_tumour(phantoms, (3.0, 0.0, -4.0)))
        assert correction.worker_starts == 3 and correction.last_reply["ok"]
        second = correction.worker.process
        interaction = session.scene.GetNodeByID("vtkMRMLInteractionNodeSingleton")
        assert interaction.GetCurrentInteractionMode() == interaction.Place
        session.leave_module()                                        # no place mode left on in other modules
        assert interaction.GetCurrentInteractionMode() == interaction.ViewTransform
        session.show_module("DiffUMambaSeg")
        session.close_scene()                                         # File > Close Scene: worker asked to quit
        assert correction.worker is None and second.wait(30) == 0     # stopped off the GUI thread
        assert widget.logic.getParameterNode().includePoints is not None      # fresh lists for the next scene
        ct = phantom_ct(session, phantoms)
        start_from_half_gtv(session, widget, phantoms, ct, tmp_path)
        use_correction_model(widget, checkpoint)
        click(session, widget, "include", ras_of_tumour(phantoms))
        third = correction.worker.process
        assert correction.worker_starts == 4 and third.poll() is None and not session.slot_errors
    assert third.wait(30) == 0                                        # module cleanup on exit stopped it
