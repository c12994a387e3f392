"""``diffumamba grow-from-seeds``: the click benchmark's baseline without AI as a command, on a real lung CT, with
``correct``'s files and checks (issue 29)."""

import json
import re

import numpy as np
import pytest
import SimpleITK as sitk

from diffumamba.cli import main


@pytest.fixture
def lung2(shared_data, tmp_path):
    """(CT path, its GTV as a bool array, the CT, a clicks file with one include click): pyradiomics lung2 (a 48 ml
    tumour, 512 x 512 x 61 at 0.63 x 0.63 x 5 mm); the click is the simulated user's first one from an empty mask,
    the GTV's deepest point (``correction.clicks.next_click``), given in LPS mm as a user's tool gives it."""
    from diffumamba.correction.clicks import next_click

    folder = shared_data / "pyradiomics_lung_ct"
    image = sitk.ReadImage(str(folder / "lung2_image.nrrd"))
    gtv = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "lung2_label.nrrd"))) > 0
    click = next_click(np.zeros_like(gtv), gtv, tuple(reversed(image.GetSpacing())))
    point = image.TransformContinuousIndexToPhysicalPoint(tuple(reversed(click.index)))
    clicks = tmp_path / "clicks.json"
    clicks.write_text(json.dumps({"coordinate_system": "LPS", "clicks": [{"point": list(point), "label": "include"}]}))
    return folder / "lung2_image.nrrd", gtv, image, clicks


def _one_error_line(capsys) -> str:
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("diffumamba grow-from-seeds: error: "), error
    return error[0]


def test_one_click_in_a_real_tumour_grows_it_as_the_benchmarks_baseline_does(lung2, tmp_path, capsys):
    """One include click: a 0/1 mask on the CT's grid, voxel for voxel what ``GrowFromSeeds`` gives in process
    (as bench/correct.py runs it), overlapping the GTV with Dice > 0.7: docs/correction.md measured 0.735 for this
    click on lung2 (the seeds alone, a 3 mm ball, would give Dice 0.005; the lesion box, 0.1 or less). An existing
    output is refused without --overwrite and replaced with it; .seg.nrrd holds one segment "GTV"."""
    from diffumamba.correction.region_growing import GrowFromSeeds
    from diffumamba.correction.request import grid_clicks, parse_request
    from diffumamba.evaluation.metrics import dice
    from diffumamba.inference.inputs import InputCase
    from diffumamba.mask_io import read_mask

    ct, gtv, image, clicks = lung2
    out = tmp_path / "grown.nii.gz"
    assert main(["grow-from-seeds", "--image", str(ct), "--clicks", str(clicks), "--output", str(out)]) == 0
    assert "lung2_image.nrrd: 1 click(s), 0 fixed slice(s) -> " in capsys.readouterr().out
    written = sitk.ReadImage(str(out))
    assert written.GetSize() == image.GetSize() and np.allclose(written.GetOrigin(), image.GetOrigin())
    assert np.allclose(written.GetSpacing(), image.GetSpacing())
    mask = sitk.GetArrayFromImage(written)
    assert set(np.unique(mask)) == {0, 1}

    array = sitk.GetArrayFromImage(image).astype(np.float32)
    spacing = tuple(reversed(image.GetSpacing()))
    request = parse_request(json.loads(clicks.read_text()), "clicks")
    expected = GrowFromSeeds(array, spacing, start=np.zeros_like(gtv)).correct(np.zeros_like(gtv),
                                                                               grid_clicks(request, image, "clicks"))
    assert np.array_equal(mask > 0, expected)
    assert dice(mask > 0, gtv) > 0.7

    segmentation = tmp_path / "grown.seg.nrrd"
    segmentation.write_bytes(b"an earlier result")
    assert main(["grow-from-seeds", "--image", str(ct), "--clicks", str(clicks), "--output", str(segmentation)]) == 2
    assert "already holds grown.seg.nrrd" in _one_error_line(capsys) and \
        segmentation.read_bytes() == b"an earlier result"
    assert main(["grow-from-seeds", "--image", str(ct), "--clicks", str(clicks), "--output", str(segmentation),
                 "--overwrite"]) == 0
    import slicerio

    assert [s["name"] for s in slicerio.read_segmentation(str(segmentation))["segments"]] == ["GTV"]
    assert np.array_equal(read_mask(segmentation, InputCase("lung2", image), what="grown") > 0, expected)


def test_refusals_say_one_line_and_write_nothing(lung2, tmp_path, capsys):
    """The output is the CT (also through a link) or of an unknown type, fixed slices (for the model only): refused
    before the CT is read; no click: refused before growing; a --model is no option of this command."""
    ct, _, _, clicks = lung2
    (tmp_path / "link.nrrd").symlink_to(ct)
    (tmp_path / "slices.json").write_text(json.dumps({"clicks": [], "fixed_slices": [30]}))
    (tmp_path / "none.json").write_text(json.dumps({"clicks": []}))
    before = ct.stat().st_mtime_ns
    cases = [(["--clicks", str(clicks), "--output", str(ct)], "--output .* would replace --image .*an output never "
                                                               "replaces an input"),
             (["--clicks", str(clicks), "--output", str(tmp_path / "link.nrrd")], "would replace --image"),
             (["--clicks", str(tmp_path / "slices.json"), "--output", str(tmp_path / "o.nii.gz")],
              "slices.json: grow-from-seeds takes clicks only, not 'fixed_slices'"),
             (["--clicks", str(tmp_path / "none.json"), "--output", str(tmp_path / "o.nii.gz")],
              "none.json: no click and no fixed slice: nothing to correct"),
             (["--clicks", str(clicks), "--output", str(tmp_path / "o.png")], "cannot write a mask of this file type")]
    for extra, message in cases:
        assert main(["grow-from-seeds", "--image", str(ct), *extra]) == 2
        line = _one_error_line(capsys)
        assert re.search(message, line), line
    assert ct.stat().st_mtime_ns == before and not (tmp_path / "o.nii.gz").exists()
    with pytest.raises(SystemExit) as exited:
        main(["grow-from-seeds", "--image", str(ct), "--clicks", str(clicks), "--output", str(tmp_path / "o.nii.gz"),
              "--model", "m.zip"])
    assert exited.value.code == 2 and "unrecognized arguments: --model" in capsys.readouterr().err
