"""``diffumamba correct`` and the ``serve --stdio`` worker: files in, a verified mask out on the image's grid, fixed
slices kept exactly, one clear error for bad input, and a worker that survives bad requests."""

import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from diffumamba.cli import main

from conftest import tumour_point


@pytest.fixture
def model(correction_model):
    return correction_model


def test_correct_writes_a_mask_on_the_image_grid_keeping_fixed_slices(model, tmp_path, capsys):
    checkpoint, phantoms = model
    point, image = tumour_point(phantoms)
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(phantoms / "labelsTr" / "c0.nii.gz")))
    k = int(np.argwhere(mask > 0)[:, 0].mean())
    drawn = mask.copy()
    drawn[k] = 0
    drawn[k, 2:5, 2:5] = 1                                         # a hand-drawn slice the network would not make
    written = sitk.GetImageFromArray(drawn)
    written.CopyInformation(image)
    sitk.WriteImage(written, str(tmp_path / "mask.nrrd"))
    (tmp_path / "clicks.json").write_text(json.dumps({"clicks": [{"point": point, "label": "include"}],
                                                      "fixed_slices": [k]}))
    assert main(["correct", "--image", str(phantoms / "imagesTr" / "c0_0000.nii.gz"), "--mask",
                 str(tmp_path / "mask.nrrd"), "--clicks", str(tmp_path / "clicks.json"), "--model", str(checkpoint),
                 "--output", str(tmp_path / "out.nii.gz"), "--device", "cpu"]) == 0
    assert "1 click(s), 1 fixed slice(s)" in capsys.readouterr().out
    out = sitk.ReadImage(str(tmp_path / "out.nii.gz"))
    assert out.GetSize() == image.GetSize() and np.allclose(out.GetOrigin(), image.GetOrigin())
    assert np.array_equal(sitk.GetArrayFromImage(out)[k], drawn[k])
    assert main(["correct", "--image", str(phantoms / "imagesTr" / "c0_0000.nii.gz"), "--clicks",
                 str(tmp_path / "clicks.json"), "--model", str(checkpoint), "--output", str(tmp_path / "o.seg.nrrd")]) == 0
    import slicerio

    segmentation = slicerio.read_segmentation(str(tmp_path / "o.seg.nrrd"))
    assert [s["name"] for s in segmentation["segments"]] == ["GTV"]


def test_correct_refuses_bad_input_in_one_line_and_writes_nothing(model, tmp_path, capsys):
    checkpoint, phantoms = model
    image = str(phantoms / "imagesTr" / "c0_0000.nii.gz")
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "far.json").write_text(json.dumps({"clicks": [{"point": [900, 0, 0], "label": "include"}]}))
    (tmp_path / "none.json").write_text(json.dumps({"clicks": []}))
    cases = [(["--clicks", str(tmp_path / "bad.json")], "bad.json: not valid JSON"),
             (["--clicks", str(tmp_path / "far.json")], "far.json: click 1 at .* lies outside the image"),
             (["--clicks", str(tmp_path / "none.json")], "none.json: no click and no fixed slice"),
             (["--clicks", str(tmp_path / "far.json"), "--mask", str(tmp_path / "missing.nrrd")],
              "current mask does not exist")]
    for extra, message in cases:
        assert main(["correct", "--image", image, "--model", str(checkpoint), "--output", str(tmp_path / "o.nii.gz"),
                     *extra]) == 2
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and error[0].startswith("diffumamba correct: error: ")
        import re

        assert re.search(message, error[0]), error[0]
    assert not (tmp_path / "o.nii.gz").exists()


def test_a_segmentation_checkpoint_is_not_a_correction_model(model, tmp_path, capsys):
    from conftest import train_tiny

    _, phantoms = model
    segmentation = train_tiny(phantoms, tmp_path, network="resunet", iterations=1)
    (tmp_path / "c.json").write_text(json.dumps({"clicks": [{"point": [1, 1, 1], "label": "include"}]}))
    assert main(["correct", "--image", str(phantoms / "imagesTr" / "c0_0000.nii.gz"), "--clicks",
                 str(tmp_path / "c.json"), "--model", str(segmentation), "--output", str(tmp_path / "o.nii.gz")]) == 2
    assert "is not a correction model (its task is segmentation); train one with 'train --task correction'" in \
        capsys.readouterr().err


def test_predict_refuses_a_correction_model(model, tmp_path, capsys):
    checkpoint, phantoms = model
    assert main(["predict", str(phantoms / "imagesTr" / "c0_0000.nii.gz"), "--model", str(checkpoint), "--out",
                 str(tmp_path / "out")]) == 2
    assert "is a click-correction model; run it with 'diffumamba correct'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_worker_answers_line_by_line_and_survives_bad_requests(model, tmp_path):
    checkpoint, phantoms = model
    point, _ = tumour_point(phantoms)
    image = str(phantoms / "imagesTr" / "c0_0000.nii.gz")
    requests = [{"id": 1, "command": "correct", "image": image, "output": str(tmp_path / "a.nii.gz"),
                 "clicks": [{"point": point, "label": "include"}]},
                {"id": 2, "command": "correct", "image": image, "output": str(tmp_path / "b.nii.gz"),
                 "clicks": [{"point": [900, 0, 0], "label": "include"}]},
                "not json",
                {"id": 4, "command": "dance"},
                {"id": 5, "command": "correct", "image": image, "mask": str(tmp_path / "a.nii.gz"),
                 "output": str(tmp_path / "c.nii.gz"), "clicks": [{"point": point, "label": "exclude"}]},
                {"id": 6, "command": "quit"}]
    lines = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in requests)
    done = subprocess.run([sys.executable, "-m", "diffumamba", "serve", "--stdio", "--model", str(checkpoint),
                           "--device", "cpu"], input=lines, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    replies = [json.loads(line) for line in done.stdout.splitlines()]
    assert replies[0]["ready"] is True and replies[0]["seconds"] > 0
    by_id = {r.get("id"): r for r in replies[1:]}
    assert by_id[1]["ok"] and by_id[1]["clicks"] == 1 and (tmp_path / "a.nii.gz").is_file()
    assert not by_id[2]["ok"] and "lies outside the image" in by_id[2]["error"]
    assert not by_id[None]["ok"] and "not valid JSON" in by_id[None]["error"]
    assert not by_id[4]["ok"] and "unknown command 'dance'" in by_id[4]["error"]
    assert by_id[5]["ok"] and (tmp_path / "c.nii.gz").is_file() and by_id[6]["quit"]
    assert len(replies) == 7
