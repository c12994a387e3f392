"""Crop, resample and normalise real CT cases, and restore predictions exactly onto the input grid."""

import numpy as np
import pytest
import SimpleITK as sitk

from diffumamba.data.preprocessing import (CaseProperties, normalise, preprocess_case, resample_array,
                                           resample_labels, resampled_shape, restore_to_original)

CT_STATS = {"mean": 2.3, "std": 100.5, "percentile_00_5": -456.6, "percentile_99_5": 90.0}  # lung fingerprint


def load(shared_data, case):
    image = sitk.ReadImage(str(shared_data / "pyradiomics_lung_ct" / f"{case}_image.nrrd"))
    label = sitk.ReadImage(str(shared_data / "pyradiomics_lung_ct" / f"{case}_label.nrrd"))
    return (image, sitk.GetArrayFromImage(image).astype(np.float32)[None],
            sitk.GetArrayFromImage(label).astype(np.int16), tuple(reversed(image.GetSpacing())))


def dice(a, b):
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.mark.parametrize("case, min_dice", [("lung1", 0.85), ("lung2", 0.97)])
def test_real_ct_round_trip_restores_the_grid(shared_data, case, min_dice):
    image, data, label, spacing = load(shared_data, case)
    out, out_label, props = preprocess_case(data, label, spacing, (2.5, 1.0, 1.0), ["CT"], [CT_STATS])
    assert out.shape[1:] == out_label.shape == resampled_shape(props.cropped_shape, spacing, (2.5, 1.0, 1.0))
    assert out.dtype == np.float32 and np.isfinite(out).all()
    # The tumour keeps its volume on the new grid (within a few percent).
    volume = (label > 0).sum() * np.prod(spacing)
    assert (out_label > 0).sum() * 2.5 == pytest.approx(volume, rel=0.1)
    restored = restore_to_original(out_label, CaseProperties.from_dict(props.to_dict()))
    assert restored.shape == label.shape and restored.dtype == label.dtype
    assert dice(restored > 0, label > 0) >= min_dice
    result = sitk.GetImageFromArray(restored)
    result.CopyInformation(image)                     # fails unless the array matches the input grid
    assert result.GetOrigin() == image.GetOrigin() and result.GetSpacing() == image.GetSpacing()


def test_ct_normalisation_clips_and_standardises(shared_data):
    _, data, label, _ = load(shared_data, "lung2")
    out = normalise(data, ["CT"], [CT_STATS])
    assert out.min() == pytest.approx((-456.6 - 2.3) / 100.5, rel=1e-5)
    assert out.max() == pytest.approx((90.0 - 2.3) / 100.5, rel=1e-5)
    tumour = out[0][label > 0]
    assert abs(tumour.mean()) < 0.3 and 0.5 < tumour.std() < 1.5


def test_mr_channels_get_a_per_image_z_score():
    data = np.random.default_rng(0).normal(300, 40, (1, 6, 7, 8)).astype(np.float32)
    out = normalise(data, ["T1"], [{}])
    assert abs(out.mean()) < 1e-5 and out.std() == pytest.approx(1.0, rel=1e-4)


def test_crop_to_nonzero_and_paste_back():
    data = np.zeros((1, 10, 12, 14), np.float32)
    data[0, 2:8, 3:9, 4:10] = 1.0
    label = (data[0] > 0).astype(np.int16)
    out, out_label, props = preprocess_case(data, label, (1, 1, 1), (1, 1, 1), ["T1"], [{}])
    assert props.bbox == ((2, 8), (3, 9), (4, 10)) and out.shape == (1, 6, 6, 6)
    np.testing.assert_array_equal(restore_to_original(out_label, props), label)
    probs = restore_to_original(np.stack([1 - out_label, out_label]).astype(np.float32), props, is_label=False)
    assert probs.shape == (2, 10, 12, 14) and probs[1].sum() == label.sum()


def test_resampling_is_box_aligned():
    # Upsampling 2x with nearest neighbour repeats every voxel exactly twice; downsampling undoes it.
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    up = resample_array(x, (4, 6, 8), order=0)
    np.testing.assert_array_equal(up, x.repeat(2, 0).repeat(2, 1).repeat(2, 2))
    np.testing.assert_array_equal(resample_array(up, (2, 3, 4), order=0), x)
    # Linear interpolation of a linear ramp stays a ramp with the same mean.
    ramp = np.tile(np.arange(10, dtype=np.float32), (3, 3, 1))
    assert resample_array(ramp, (3, 3, 20), order=1).mean() == pytest.approx(ramp.mean(), abs=0.05)


def test_linear_label_resampling_keeps_every_label():
    labels = np.zeros((8, 8, 8), np.int16)
    labels[1:4, 1:4, 1:4], labels[4:7, 4:7, 4:7] = 1, 2
    for linear in (False, True):
        out = resample_labels(labels, (16, 16, 16), linear=linear)
        assert set(np.unique(out)) == {0, 1, 2}
        assert (out == 1).sum() == pytest.approx(27 * 8, rel=0.2)


def test_slice_axis_follows_nnunets_anisotropy_rule_and_takes_nearest_slices():
    """nnU-Net resamples the slice axis of anisotropic images (spacing ratio > 3, one coarsest axis) separately,
    nearest neighbour by default; ours does the same for imported plans (``separate_z_order``)."""
    from diffumamba.data.preprocessing import resample_image, slice_axis

    assert slice_axis((3.0, 0.98, 0.98), (3.0, 1.5, 1.5)) == 0            # source anisotropic: 3.06
    assert slice_axis((2.5, 0.98, 0.98), (1.0, 1.0, 4.0)) == 2            # else the target's
    assert slice_axis((2.5, 0.98, 0.98), (2.5, 1.0, 1.0)) is None         # ratio 2.55: one spline everywhere
    assert slice_axis((3.0, 3.0, 0.5), (3.0, 3.0, 0.5)) is None           # two coarsest axes tie
    slices = np.stack([np.full((4, 4), float(k)) for k in range(3)])    # slice k holds the value k
    out = resample_image(slices, (6, 4, 4), order=3, axis=0, axis_order=0)
    assert [float(v) for v in out[:, 0, 0]] == [0, 0, 1, 1, 2, 2]        # whole slices copied, never blended
    blended = resample_image(slices, (6, 4, 4), order=3)
    assert not np.allclose(blended[1, 0, 0], 0) or not np.allclose(blended[2, 0, 0], 1)
