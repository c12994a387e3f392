"""``correct`` and the ``serve`` worker against issue 28's re-test (../shared/reference/reliability-retest-2026-12.md):
an output never replaces an input (D2), malformed requests get one line and the worker lives on (D3, D4, D13), the
image cache follows content, not modification times (D5), one writer per output file (D6), masks are 0/1 (D10),
dead writers' debris is removed (D11), a vanished reader ends the worker quietly (D12), errors name the user's file
(D15)."""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from diffumamba.cli import main
from diffumamba.files import file_lock, partial_path

from conftest import tumour_point


def _setup(correction_model, tmp_path):
    """(checkpoint, a copy of phantom c0's CT, its mask as a 0/1 .nrrd, a clicks file on the tumour)."""
    checkpoint, phantoms = correction_model
    point, _ = tumour_point(phantoms)
    image = tmp_path / "ct.nii.gz"
    shutil.copyfile(phantoms / "imagesTr" / "c0_0000.nii.gz", image)
    mask = tmp_path / "gtv.nrrd"
    sitk.WriteImage(sitk.ReadImage(str(phantoms / "labelsTr" / "c0.nii.gz")), str(mask))
    clicks = tmp_path / "clicks.json"
    clicks.write_text(json.dumps({"clicks": [{"point": point, "label": "include"}]}))
    return checkpoint, image, mask, clicks, point


def _correct(checkpoint, image, clicks, output, *extra):
    return main(["correct", "--image", str(image), "--clicks", str(clicks), "--model", str(checkpoint), "--output",
                 str(output), "--device", "cpu", *extra])


def _one_error_line(capsys) -> str:
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("diffumamba correct: error: "), error
    return error[0]


def _serve(checkpoint, lines, **kwargs):
    """Run the worker over ``lines`` (str or dict each); (replies by id, the completed process)."""
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in lines)
    done = subprocess.run([sys.executable, "-m", "diffumamba", "serve", "--stdio", "--model", str(checkpoint),
                           "--device", "cpu"], input=text, capture_output=True, text=True, timeout=300, **kwargs)
    assert "Traceback" not in done.stderr, done.stderr
    replies = [json.loads(line) for line in done.stdout.splitlines()]
    return replies, done


def test_an_output_never_replaces_an_input(correction_model, tmp_path, capsys):
    """D2: --output equal to --image (also through a link or another spelling) or to --mask is refused before the
    model is loaded; the CT and the mask are left byte for byte."""
    checkpoint, image, mask, clicks, point = _setup(correction_model, tmp_path)
    before = {p: p.read_bytes() for p in (image, mask)}
    (tmp_path / "link.nii.gz").symlink_to(image)
    for output, extra, named in ((image, [], "--image"), (tmp_path / "sub" / ".." / "ct.nii.gz", [], "--image"),
                                 (tmp_path / "link.nii.gz", [], "--image"), (mask, ["--mask", str(mask)], "--mask")):
        (tmp_path / "sub").mkdir(exist_ok=True)
        assert _correct(checkpoint, image, clicks, output, *extra) == 2
        assert re.search(f"--output .* would replace {named} .*an output never replaces an input",
                         _one_error_line(capsys))
    assert all(p.read_bytes() == raw for p, raw in before.items())
    replies, _ = _serve(checkpoint, [{"id": 1, "command": "correct", "image": str(image), "output": str(image),
                                      "clicks": [{"point": point, "label": "include"}]}, {"id": 2, "command": "quit"}])
    assert not replies[1]["ok"] and "would replace image" in replies[1]["error"]
    assert image.read_bytes() == before[image]


def test_malformed_requests_get_one_line_and_the_worker_lives_on(correction_model, tmp_path, capsys):
    """D3, D4, D13: a number or a list where a path belongs, a 401-digit coordinate, booleans as coordinates, JSON
    nested 200,000 deep, an unknown key: each answered with ok:false, and the next good request is answered."""
    checkpoint, image, mask, clicks, point = _setup(correction_model, tmp_path)
    good = {"command": "correct", "image": str(image), "output": str(tmp_path / "o.nii.gz"),
            "clicks": [{"point": point, "label": "include"}]}
    bad = {1: ({**good, "mask": 5}, "'mask' must be a file path"),
           2: ({**good, "mask": ["a"]}, "'mask' must be a file path"),
           3: ({**good, "clicks": [{"point": [10 ** 400, 0, 0], "label": "include"}]}, "click 1 needs 'point'"),
           4: ({**good, "clicks": [{"point": [True, True, True], "label": "include"}]}, "not true"),
           5: ({**good, "clicks": [{"point": [1e300, 0, 0], "label": "include"}]}, "within 1e\\+06 mm"),
           6: ({**good, "fixed_slice": [3]}, "unknown key\\(s\\) 'fixed_slice'"),
           7: ({**good, "image": 7}, "'image' must be a file path"),
           8: ({**good, "clicks": ["x"]}, "click 1 must be an object")}
    lines = [{"id": i, **request} for i, (request, _) in bad.items()]
    lines += ["[" * 200_000 + "]" * 200_000, {"id": 9, **good}, {"id": 10, "command": "quit"}]
    replies, done = _serve(checkpoint, lines)
    assert done.returncode == 0
    by_id = {r.get("id"): r for r in replies[1:]}
    for number, (_, message) in bad.items():
        assert not by_id[number]["ok"] and re.search(message, by_id[number]["error"]), by_id[number]
    assert not by_id[None]["ok"] and "nested too deeply" in by_id[None]["error"]
    assert by_id[9]["ok"] and by_id[10]["quit"] and len(replies) == 12
    # the same through `correct --clicks FILE`: one error line, nothing written
    for text, message in ((json.dumps({"clicks": bad[3][0]["clicks"]}), "click 1 needs 'point'.* is too large"),
                          (json.dumps({"clicks": bad[4][0]["clicks"]}), "click 1 needs 'point'.*not true"),
                          ("[" * 200_000 + "]" * 200_000, "clicks.json: JSON nested too deeply")):
        clicks.write_text(text)
        assert _correct(checkpoint, image, clicks, tmp_path / "c.nii.gz") == 2
        assert re.search(message, _one_error_line(capsys))
    assert not (tmp_path / "c.nii.gz").exists()


def test_the_worker_reads_an_image_again_when_its_content_changes_with_the_same_mtime(correction_model, tmp_path):
    """D5, image file: replaced by a scan on another grid, its modification time put back (cp -p, rsync -t): the
    second answer lies on the new grid."""
    checkpoint, image, mask, clicks, point = _setup(correction_model, tmp_path)
    stat = image.stat()
    request = {"command": "correct", "image": str(image), "output": str(tmp_path / "a.nii.gz"),
               "clicks": [{"point": point, "label": "include"}]}
    thick = sitk.ReadImage(str(image))
    thick.SetSpacing((1.0, 1.0, 3.0))
    replacement = tmp_path / "replacement.nii.gz"
    sitk.WriteImage(thick, str(replacement))
    script = (f"import os, shutil, sys; shutil.copyfile({str(replacement)!r}, {str(image)!r}); "
              f"os.utime({str(image)!r}, ns=({stat.st_atime_ns}, {stat.st_mtime_ns}))")
    # the worker answers request 1, then the test rewrites the file between the two requests through a ping
    process = subprocess.Popen([sys.executable, "-m", "diffumamba", "serve", "--stdio", "--model", str(checkpoint),
                                "--device", "cpu"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert json.loads(process.stdout.readline())["ready"]
        process.stdin.write(json.dumps({"id": 1, **request}) + "\n")
        process.stdin.flush()
        assert json.loads(process.stdout.readline())["ok"]
        subprocess.run([sys.executable, "-c", script], check=True)
        assert image.stat().st_mtime_ns == stat.st_mtime_ns
        process.stdin.write(json.dumps({"id": 2, **request, "output": str(tmp_path / "b.nii.gz")}) + "\n")
        process.stdin.flush()
        second = json.loads(process.stdout.readline())
        process.stdin.write('{"command": "quit"}\n')
        process.stdin.flush()
    finally:
        process.communicate(timeout=60)
    assert second["ok"], second
    assert sitk.ReadImage(str(tmp_path / "a.nii.gz")).GetSpacing()[2] == 2.0
    assert sitk.ReadImage(str(tmp_path / "b.nii.gz")).GetSpacing()[2] == 3.0


def test_a_dicom_folder_overwritten_in_place_is_read_again(correction_model, shared_data, tmp_path):
    """D5, DICOM folder: STS_002's series, then STS_003's files written over it in place with each file's
    modification time put back (the folder's time never changes): the worker's cache must give STS_003."""
    from diffumamba.commands.correction_service import CorrectionService

    checkpoint, _ = correction_model
    source = shared_data / "sts_sarcoma_ibsi"
    series = tmp_path / "series"
    shutil.copytree(source / "STS_002" / "ct_dicom" / "image", series)
    service = CorrectionService([checkpoint], "cpu")
    first = service.image(series)[0]
    folder_mtime = series.stat().st_mtime_ns
    for path, other in zip(sorted(series.iterdir()), sorted((source / "STS_003" / "ct_dicom" / "image").iterdir())):
        stat = path.stat()
        path.write_bytes(other.read_bytes())
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert series.stat().st_mtime_ns == folder_mtime
    second = service.image(series)[0]
    assert str(first.slices[0].PatientID) != str(second.slices[0].PatientID)
    assert str(second.slices[0].PatientID) == str(__import__("pydicom").dcmread(
        source / "STS_003" / "ct_dicom" / "image" / "000000.dcm", stop_before_pixels=True).PatientID)


def test_one_writer_per_output_file_and_dead_writers_debris_removed(correction_model, tmp_path, capsys):
    """D6: while another run writes o.nii.gz, a correct or serve request for the same file is refused (no reply
    describes a file another run replaced); D11: a partial file left by a killed writer is removed by the next
    request into the folder."""
    checkpoint, image, mask, clicks, point = _setup(correction_model, tmp_path)
    output = tmp_path / "o.nii.gz"
    with file_lock(output):                          # a live run (this process) is writing o.nii.gz
        assert _correct(checkpoint, image, clicks, output) == 2
        assert "another run is writing " + str(output) in _one_error_line(capsys)
        replies, _ = _serve(checkpoint, [{"id": 1, "command": "correct", "image": str(image), "output": str(output),
                                          "clicks": [{"point": point, "label": "include"}]}])
        assert not replies[1]["ok"] and "another run is writing" in replies[1]["error"]
    assert not output.exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    debris = tmp_path / f".o.partial-{int(dead.stdout)}-0badc0de.nii.gz"       # as files.partial_path names them
    debris.write_bytes(b"half a mask")
    assert _correct(checkpoint, image, clicks, output) == 0
    assert output.is_file() and not debris.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".o.nii.gz")]     # the lock is gone too


def test_the_mask_must_be_a_0_1_mask(correction_model, tmp_path, capsys):
    """D10: a CT given as --mask, a fractional mask or a label-2 map is refused, not binarised as "> 0"."""
    checkpoint, image, mask, clicks, point = _setup(correction_model, tmp_path)
    label = sitk.ReadImage(str(mask))
    for name, array, found in (("ct.nrrd", None, "from -"), ("half.nrrd", 0.5, "not all whole numbers"),
                               ("two.nrrd", 2, "from 0 to 2")):
        path = tmp_path / name
        if array is None:
            shutil.copyfile(image, tmp_path / "ct_copy.nii.gz")
            path = tmp_path / "ct_copy.nii.gz"
        else:
            values = sitk.GetImageFromArray(sitk.GetArrayFromImage(label).astype(np.float32) * array)
            values.CopyInformation(label)
            sitk.WriteImage(values, str(path))
        assert _correct(checkpoint, image, clicks, tmp_path / "o.nii.gz", "--mask", str(path)) == 2
        line = _one_error_line(capsys)
        assert f"{path.name} is not a 0/1 mask" in line and found in line, line
    assert not (tmp_path / "o.nii.gz").exists()
    assert _correct(checkpoint, image, clicks, tmp_path / "o.nii.gz", "--mask", str(mask)) == 0


def test_errors_name_the_users_file_not_our_temporary(correction_model, tmp_path, capsys):
    """D15: an output folder, a name without a known suffix, a .png; a mask from another scan."""
    checkpoint, image, mask, clicks, point = _setup(correction_model, tmp_path)
    (tmp_path / "folder").mkdir()
    for output, message in ((tmp_path / "folder", "is a folder; give a file ending in .nii.gz"),
                            (tmp_path / "out_c", "cannot write a mask of this file type; give a name ending in"),
                            (tmp_path / "o.png", "cannot write a mask of this file type")):
        assert _correct(checkpoint, image, clicks, output) == 2
        line = _one_error_line(capsys)
        assert message in line and ".partial" not in line, line
    moved = sitk.ReadImage(str(mask))
    moved.SetOrigin((500.0, 500.0, 500.0))
    sitk.WriteImage(moved, str(tmp_path / "elsewhere.nrrd"))
    assert _correct(checkpoint, image, clicks, tmp_path / "o.nii.gz", "--mask", str(tmp_path / "elsewhere.nrrd")) == 2
    line = _one_error_line(capsys)
    assert "the current mask in elsewhere.nrrd lies outside its scan" in line and "prior" not in line, line


def test_the_write_error_names_the_output_not_the_temporary(tmp_path):
    """D15: writers name the hidden temporary file they were given; the user's error names the output."""
    from diffumamba.files import write_error

    output = tmp_path / "o.nii.gz"
    temporary = partial_path(output, ".nii.gz")
    error = write_error(output, RuntimeError(f"Could not create IO object for writing file {temporary}"), temporary)
    assert str(output) in str(error) and ".partial" not in str(error)


def test_a_worker_whose_reader_went_away_stops_quietly(correction_model):
    """D12: the client closes the worker's stdout; the next reply finds no reader: one line on stderr, exit 0, no
    BrokenPipeError traceback."""
    checkpoint, _ = correction_model
    process = subprocess.Popen([sys.executable, "-m", "diffumamba", "serve", "--stdio", "--model", str(checkpoint),
                                "--device", "cpu"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert json.loads(process.stdout.readline())["ready"]
    process.stdout.close()
    process.stdin.write('{"id": 1, "command": "ping"}\n' * 64)
    process.stdin.flush()
    process.stdin.close()
    assert process.wait(timeout=60) == 0
    error = process.stderr.read()
    assert "Traceback" not in error and "BrokenPipeError" not in error
    assert error.strip() == "diffumamba serve: the reader of stdout went away; stopping"
