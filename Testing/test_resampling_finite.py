"""Cubic resampling of an axis of 2 voxels (37 of LIDC's 993 nodule crops have 2 slices).

ITK's B-spline interpolator reads outside its coefficients there: values off by a few percent, and at random
NaN or values near 3e38, so a cached case or a training run could differ, or turn NaN, from one run to the next.
Such axes are resampled linearly now, and every resampling that makes NaN/Inf from finite values is refused.
"""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import make_dataset
from diffumamba.cli import main
from diffumamba.data.preprocessing import preprocess_case, resample_array

LIDC = "lidc_idri_nodule_vois"
TWO_SLICES = "LIDC-IDRI-1003_R_3"            # 2 x 44 x 43 voxels of 1.8 x 0.59 x 0.59 mm


def lidc(shared_data, case=TWO_SLICES):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(shared_data / LIDC / "image" / f"{case}.nii.gz"))).astype(np.float32)


def test_cubic_resampling_of_a_real_two_slice_crop_is_finite_and_repeatable(shared_data):
    array = lidc(shared_data)
    assert array.shape == (2, 44, 43)
    first = resample_array(array, (4, 43, 43), order=3)
    for _ in range(9):                            # the old reads outside the data differed in 16 of 29 repeats
        np.testing.assert_array_equal(resample_array(array, (4, 43, 43), order=3), first)
    assert np.isfinite(first).all()
    assert array.min() - 200 < first.min() and first.max() < array.max() + 200      # HU: no stray values


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_an_image_constant_along_its_two_voxel_axis_stays_constant(shared_data, axis):
    """Any interpolation keeps a constant a constant; the old one added a share of whatever memory lay before its
    coefficients to every sample in the last quarter of the axis."""
    plane = lidc(shared_data)[0]                                      # a real 44 x 43 slice
    array = np.stack([plane, plane], axis)
    shape = [5 if a == axis else n - 1 for a, n in enumerate(array.shape)]
    out = resample_array(array, shape, order=3)
    in_plane = resample_array(plane, [n for a, n in enumerate(shape) if a != axis], order=3)
    for k in range(5):
        np.testing.assert_allclose(np.take(out, k, axis), in_plane, atol=1e-3)


def test_two_short_axes_and_two_dimensional_arrays_are_resampled_linearly():
    rng = np.random.default_rng(0)
    for array, shape in ((rng.normal(size=(2, 2, 16)).astype(np.float32), (5, 3, 17)),
                         (rng.normal(size=(2, 30)).astype(np.float32), (5, 31))):
        out = resample_array(array, shape, order=3)
        np.testing.assert_array_equal(out, resample_array(array, shape, order=1))


def test_other_shapes_keep_itks_cubic_spline_bit_for_bit(shared_data):
    """Axes of 1 and 3 or more voxels were never affected: their results (cached preprocessing, nnU-Net equality)
    must not change."""
    array = lidc(shared_data, "LIDC-IDRI-0001_R_1")                    # 11 x 64 x 53
    for source, shape in ((array, (22, 45, 37)), (array[:3], (7, 45, 37)), (array[:1], (3, 45, 37))):
        image = sitk.GetImageFromArray(source)
        spacing = [o / n for o, n in zip(reversed(source.shape), reversed(shape))]
        expected = sitk.GetArrayFromImage(sitk.Resample(
            image, list(reversed(shape)), sitk.Transform(), sitk.sitkBSpline, [(s - 1) / 2 for s in spacing], spacing,
            image.GetDirection(), 0.0, sitk.sitkFloat32))
        np.testing.assert_array_equal(resample_array(source, shape, order=3), expected)


def test_a_resampling_that_makes_nan_is_refused_naming_the_case_and_the_shapes(shared_data, monkeypatch):
    resample = sitk.Resample

    def leaky(*args):
        out = resample(*args)
        out[0, 0, 0] = out[1, 0, 0] = out[2, 0, 0] = float("nan")
        return out

    monkeypatch.setattr(sitk, "Resample", leaky)
    data = lidc(shared_data, "LIDC-IDRI-0001_R_1")[None]
    with pytest.raises(ValueError, match=r"^LIDC-IDRI-0001_R_1: cubic B-spline resampling of a 11 x 64 x 53 array "
                                         r"to 22 x 45 x 37 made 3 NaN/Inf values from finite ones: a defect of the "
                                         r"resampling; please report it with these shapes$"):
        preprocess_case(data, None, (2.5, 0.7, 0.7), (1.25, 1.0, 1.0), ["CT"], [{"mean": -500.0, "std": 400.0,
                        "percentile_00_5": -1000.0, "percentile_99_5": 400.0}], source="LIDC-IDRI-0001_R_1")


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_normalisation_that_overflows_is_refused_naming_the_case():
    """Finite float32 voxels near its limit overflow the per-image z-score (MR channels): the cache would hold NaN."""
    data = np.full((1, 6, 8, 8), 3e38, np.float32)
    data[0, 2:4] = 1e38
    with pytest.raises(ValueError, match=r"^big.nrrd: preprocessing made \d+ NaN/Inf values from finite voxels"):
        preprocess_case(data, None, (1, 1, 1), (1, 1, 1), ["T1"], [{}], source="big.nrrd")


def lidc_dataset(root, shared_data, cases):
    """LIDC nodule crops as an nnU-Net raw dataset (links to the real files)."""
    make_dataset(root, cases, ending=".nii.gz", labels={"background": 0, "nodule": 1})
    for case in cases:
        (root / "imagesTr" / f"{case}_0000.nii.gz").symlink_to(shared_data / LIDC / "image" / f"{case}.nii.gz")
        (root / "labelsTr" / f"{case}.nii.gz").symlink_to(shared_data / LIDC / "mask" / f"{case}.nii.gz")
    return root


def test_two_slice_lidc_crops_are_preprocessed_finite_and_train(shared_data, tmp_path, capsys):
    """Both 2-slice crops (1.8 and 2.5 mm slices) go to 0.9 mm: cubic on every axis by the default plan."""
    from diffumamba.data.cache import load_case

    cases = [TWO_SLICES, "LIDC-IDRI-0005_R_1", "LIDC-IDRI-0001_R_1", "LIDC-IDRI-0003_R_2"]
    dataset = lidc_dataset(tmp_path / "Dataset950_LIDC", shared_data, cases)
    options = ["--preprocessed", str(tmp_path / "pre"), "--spacing", "0.9", "0.6", "0.6", "--features", "4", "8",
               "--max-patch", "8", "32", "32", "--no-amp", "--network", "resunet"]
    assert main(["preprocess", str(dataset), *options]) == 0
    folder = next((tmp_path / "pre").glob("plan_*"))
    assert json.loads((folder / "plan.json").read_text())["image_order"] == 3
    for case in cases:
        data, label, properties = load_case(folder, case)
        assert np.isfinite(data).all(), case
    assert load_case(folder, TWO_SLICES)[0].shape[1] == 4
    assert main(["train", str(dataset), *options, "--run-dir", str(tmp_path / "run"), "--fold", "all",
                 "--epochs", "1", "--iterations", "2"]) == 0
    assert main(["train", str(dataset), *options, "--run-dir", str(tmp_path / "correction"), "--fold", "all",
                 "--epochs", "1", "--iterations", "2", "--task", "correction"]) == 0
    out = capsys.readouterr().out
    assert "loss nan" not in out and "epoch 1: loss" in out


def test_a_two_slice_case_cached_before_the_fix_is_recomputed(shared_data, tmp_path):
    """A cache made by the old resampling holds finite but wrong values for 2-voxel axes, under an unchanged key:
    such cases are recomputed (their record lacks the resampling version); other cases are kept."""
    from diffumamba.data.cache import load_case

    cases = [TWO_SLICES, "LIDC-IDRI-0001_R_1"]
    dataset = lidc_dataset(tmp_path / "Dataset950_LIDC", shared_data, cases)
    options = ["--preprocessed", str(tmp_path / "pre"), "--spacing", "0.9", "0.6", "0.6", "--features", "4", "8",
               "--max-patch", "8", "32", "32", "--no-amp", "--network", "resunet"]
    assert main(["preprocess", str(dataset), *options]) == 0
    folder = next((tmp_path / "pre").glob("plan_*"))
    right = load_case(folder, TWO_SLICES)[0]
    for case in cases:                              # as the old code left them: wrong values, no version
        record = folder / "cases" / f"{case}.json"
        record.write_text(json.dumps({k: v for k, v in json.loads(record.read_text()).items() if k != "resampling"}))
        data, label, _ = load_case(folder, case)
        np.savez(folder / "cases" / f"{case}.npz", data=data + 1000.0, label=label)
    assert main(["preprocess", str(dataset), *options]) == 0
    np.testing.assert_array_equal(load_case(folder, TWO_SLICES)[0], right)
    assert load_case(folder, "LIDC-IDRI-0001_R_1")[0].min() >= 1000.0 - 10      # no 2-voxel axis: kept as cached
