"""Metrics on hand-computed cases and real labels; the ``evaluate`` command's reports and refusals."""

import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage

from diffumamba.cli import main
from diffumamba.evaluation import label_metrics


def cube(shape=(20, 20, 20), start=(5, 5, 5), size=10):
    mask = np.zeros(shape, bool)
    mask[tuple(slice(s, s + size) for s in start)] = True
    return mask


def sphere(radius, shape=(40, 40, 40)):
    grid = np.indices(shape) - (np.array(shape) // 2)[:, None, None, None]
    return (grid ** 2).sum(0) <= radius ** 2


def test_identical_masks():
    m = label_metrics(cube(), cube(), (1, 1, 1))
    assert (m["dice"], m["hd95_mm"], m["assd_mm"], m["nsd"]) == (1.0, 0.0, 0.0, 1.0)
    assert m["ref_volume_ml"] == pytest.approx(1.0)


def test_shifted_cube_isotropic():
    m = label_metrics(cube(start=(5, 5, 7)), cube(), (1, 1, 1), nsd_tolerance_mm=2.0)
    assert m["dice"] == pytest.approx(0.8)          # overlap 10 x 10 x 8 of two 1000-voxel cubes
    assert m["hd95_mm"] == pytest.approx(2.0)
    assert m["nsd"] == pytest.approx(1.0)           # every surface point within 2 mm
    assert 0 < m["assd_mm"] < 2.0


def test_shift_along_a_thick_slice_axis_is_in_mm():
    m = label_metrics(cube(start=(6, 5, 5)), cube(), (3.0, 1.0, 1.0), nsd_tolerance_mm=2.0)
    assert m["dice"] == pytest.approx(0.9)
    assert m["hd95_mm"] == pytest.approx(3.0)
    assert m["ref_volume_ml"] == pytest.approx(3.0)
    assert m["nsd"] < 0.9                            # the two 3 mm faces are out of tolerance


def test_concentric_spheres_are_two_mm_apart():
    m = label_metrics(sphere(12), sphere(10), (1, 1, 1))
    assert m["hd95_mm"] == pytest.approx(2.0, abs=0.5)
    assert m["assd_mm"] == pytest.approx(2.0, abs=0.5)
    assert m["dice"] == pytest.approx(2 * sphere(10).sum() / (sphere(10).sum() + sphere(12).sum()))


@pytest.mark.filterwarnings("ignore::FutureWarning")  # MONAI's own use of a deprecated argument
def test_cropping_does_not_change_the_numbers():
    from monai.metrics import compute_hausdorff_distance

    pred, ref = sphere(7, (60, 50, 40)), np.roll(sphere(6, (60, 50, 40)), 3, axis=1)
    full = compute_hausdorff_distance(torch.from_numpy(np.stack([~pred, pred])[None].astype(np.float32)),
                                      torch.from_numpy(np.stack([~ref, ref])[None].astype(np.float32)),
                                      percentile=95, spacing=[2.0, 1.0, 0.5])
    assert label_metrics(pred, ref, (2.0, 1.0, 0.5))["hd95_mm"] == pytest.approx(float(full.item()))


def test_masks_touching_the_border_keep_their_surface():
    ref = np.zeros((10, 10, 10), bool)
    ref[:, :, :5] = True
    pred = np.zeros_like(ref)
    pred[:, :, :6] = True
    assert label_metrics(pred, ref, (1, 1, 1))["hd95_mm"] == pytest.approx(1.0)


def test_empty_masks_give_documented_finite_values():
    empty = np.zeros((10, 20, 30), bool)
    both = label_metrics(empty, empty, (2, 1, 1))
    assert (both["dice"], both["hd95_mm"], both["assd_mm"], both["nsd"]) == (1.0, 0.0, 0.0, 1.0)
    diagonal = np.sqrt(20 ** 2 + 20 ** 2 + 30 ** 2)
    for pred, ref in ((empty, cube((10, 20, 30), (2, 2, 2), 5)), (cube((10, 20, 30), (2, 2, 2), 5), empty)):
        m = label_metrics(pred, ref, (2, 1, 1))
        assert m["dice"] == 0.0 and m["nsd"] == 0.0
        assert m["hd95_mm"] == pytest.approx(diagonal) and m["assd_mm"] == pytest.approx(diagonal)
        assert m["pred_empty"] == (not pred.any()) and m["ref_empty"] == (not ref.any())
        assert all(np.isfinite(v) for k, v in m.items() if isinstance(v, float))


def test_shape_and_spacing_errors():
    with pytest.raises(ValueError, match="differs"):
        label_metrics(cube(), cube((20, 20, 21)), (1, 1, 1))
    with pytest.raises(ValueError, match="spacing needs 3"):
        label_metrics(cube(), cube(), (1, 1))


def test_real_lung_tumour_against_its_one_voxel_dilation(shared_data):
    image = sitk.ReadImage(str(shared_data / "pyradiomics_lung_ct" / "lung2_label.nrrd"))
    ref = sitk.GetArrayFromImage(image) > 0
    spacing = tuple(reversed(image.GetSpacing()))                     # (5.0, 0.627, 0.627) mm
    m = label_metrics(ndimage.binary_dilation(ref), ref, spacing)
    assert m["ref_volume_ml"] == pytest.approx(24_644 * np.prod(spacing) / 1000)
    assert 0.8 < m["dice"] < 0.9
    assert m["hd95_mm"] == pytest.approx(5.0, abs=1e-3)               # one 5 mm slice above and below
    assert m["assd_mm"] < m["hd95_mm"]


def write_label(path, array, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)):
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    sitk.WriteImage(image, str(path))


@pytest.fixture
def folders(tmp_path):
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    pred.mkdir(), ref.mkdir()
    write_label(ref / "case_a.nii.gz", cube())
    write_label(pred / "case_a.nrrd", cube(start=(5, 5, 7)))
    write_label(ref / "case_b.nii.gz", cube() * 2)                      # label 2 only
    write_label(pred / "case_b.nii.gz", np.zeros((20, 20, 20)))
    return pred, ref, tmp_path / "out"


def test_evaluate_writes_csv_json_and_boxplot(folders, capsys):
    pred, ref, out = folders
    assert main(["evaluate", "--pred", str(pred), "--ref", str(ref), "--out", str(out),
                 "--labels", "1=GTV", "2=node"]) == 0
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [(r["case"], r["label"]) for r in rows] == [("case_a", "GTV"), ("case_a", "node"),
                                                        ("case_b", "GTV"), ("case_b", "node")]
    assert float(rows[0]["dice"]) == pytest.approx(0.8) and float(rows[0]["hd95_mm"]) == pytest.approx(2.0)
    assert rows[1]["ref_empty"] == "True" and float(rows[1]["dice"]) == 1.0       # both empty
    assert rows[3]["pred_empty"] == "True" and float(rows[3]["dice"]) == 0.0      # missed the node
    summary = json.loads((out / "summary.json").read_text())
    assert summary["labels"]["GTV"]["dice"]["mean"] == pytest.approx((0.8 + 1.0) / 2)
    assert summary["labels"]["node"]["pred_empty"] == 2 and summary["settings"]["nsd_tolerance_mm"] == 2.0
    assert (out / "boxplot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "GTV: 2 cases" in capsys.readouterr().out


def test_default_labels_come_from_the_references(folders):
    pred, ref, out = folders
    assert main(["evaluate", "--pred", str(pred), "--ref", str(ref), "--out", str(out)]) == 0
    assert {r["label"] for r in csv.DictReader((out / "metrics.csv").open())} == {"label_1", "label_2"}


@pytest.mark.parametrize("breakage, message", [
    ("grid", "is not on the grid"),
    ("missing", "no prediction for 1 reference case"),
    ("corrupt", "cannot read"),
    ("float", "non-integer"),
])
def test_evaluate_refuses_bad_input_without_writing(folders, capsys, breakage, message):
    pred, ref, out = folders
    if breakage == "grid":
        write_label(pred / "case_b.nii.gz", np.zeros((20, 20, 20)), spacing=(1.0, 1.0, 2.0))
    elif breakage == "missing":
        (pred / "case_b.nii.gz").unlink()
    elif breakage == "corrupt":
        (pred / "case_b.nii.gz").write_bytes(b"not an image")
    else:
        image = sitk.GetImageFromArray(np.full((20, 20, 20), 0.5, np.float32))
        sitk.WriteImage(image, str(pred / "case_b.nii.gz"))
    assert main(["evaluate", "--pred", str(pred), "--ref", str(ref), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()


def test_evaluate_option_errors(folders, capsys):
    pred, ref, out = folders
    assert main(["evaluate", "--pred", str(pred), "--ref", str(ref), "--out", str(out), "--labels", "GTV"]) == 2
    assert "VALUE=NAME" in capsys.readouterr().err
    assert main(["evaluate", "--pred", str(pred / "nope"), "--ref", str(ref), "--out", str(out)]) == 2
    assert "prediction folder does not exist" in capsys.readouterr().err


def test_band_dice_counts_only_the_voxels_near_the_reference_contour():
    """band_dice against an independent computation: the chessboard distance transform on both sides of the border."""
    from scipy import ndimage

    from diffumamba.evaluation.metrics import band_dice

    ref = np.zeros((20, 24, 24), bool)
    ref[5:15, 6:18, 6:18] = True
    pred = np.zeros_like(ref)
    pred[6:16, 8:20, 6:18] = True                              # shifted by one slice and two rows
    inside = ndimage.distance_transform_cdt(ref, metric="chessboard")
    outside = ndimage.distance_transform_cdt(~ref, metric="chessboard")
    band = np.where(ref, inside, outside) <= 3
    expected = 2 * (pred & ref & band).sum() / ((pred & band).sum() + (ref & band).sum())
    assert band_dice(pred, ref) == pytest.approx(expected)
    assert band_dice(ref, ref) == 1.0
    whole = 2 * (pred & ref).sum() / (pred.sum() + ref.sum())
    assert band_dice(pred, ref) < whole                        # the core's agreement does not count
