"""Contour propagation library: registration recovers a known deformation, warps keep geometry, the simulator
changes tumour volume as asked, prior GTVs are read from every format, and the prior channel is corrupted
as documented."""

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from diffumamba.demo.phantom import make_phantom
from diffumamba.training.prior_augmentation import dilate, erode, perturb_prior, shift
from diffumamba.propagation.registration import RegistrationSettings, looks_like_ct, register
from diffumamba.propagation.simulate import SimulationSettings, change_tumour_volume, simulate_followup
from diffumamba.propagation.warp import jacobian_range, warp_image, warp_mask


def image(array, spacing=(1.5, 1.5, 2.5), origin=(0.0, 0.0, 0.0)):
    out = sitk.GetImageFromArray(array)
    out.SetSpacing(spacing)
    out.SetOrigin(origin)
    return out


def dice(a, b):
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return 2 * (a & b).sum() / (a.sum() + b.sum())


@pytest.fixture(scope="module")
def phantom_followup():
    """A CT phantom and a simulated follow-up with a known deformation and no tumour change."""
    ct, label = make_phantom(0)
    prior, prior_mask = image(ct), image(label)
    followup = simulate_followup(prior, prior_mask, SimulationSettings(volume_change=(1, 1)), rng=0)
    return prior, prior_mask, followup


def test_registration_recovers_a_known_deformation(phantom_followup):
    prior, prior_mask, followup = phantom_followup
    truth = sitk.GetArrayFromImage(followup.mask)
    unregistered = dice(sitk.GetArrayFromImage(prior_mask), truth)
    rigid = register(followup.image, prior, RegistrationSettings(deformable=False), prior_mask=prior_mask)
    full = register(followup.image, prior, RegistrationSettings(), prior_mask=prior_mask)
    rigid_dice = dice(sitk.GetArrayFromImage(warp_mask(prior_mask, followup.image, rigid.transform)), truth)
    full_dice = dice(sitk.GetArrayFromImage(warp_mask(prior_mask, followup.image, full.transform)), truth)
    assert unregistered < 0.5                      # the simulated motion is far larger than the tumour
    assert rigid_dice > 0.8 and full_dice > 0.95 and full_dice > rigid_dice
    assert set(full.seconds) == {"resample", "rigid", "deformable"} and "deformable" not in rigid.seconds
    low, high = jacobian_range(full.transform, followup.image)
    assert 0 < low < 1 < high < 2                  # a plausible, fold-free deformation


def test_registration_is_reproducible(phantom_followup):
    prior, prior_mask, followup = phantom_followup
    settings = RegistrationSettings(deformable=False)
    a = register(followup.image, prior, settings).transform.GetParameters()
    b = register(followup.image, prior, settings).transform.GetParameters()
    assert np.allclose(a, b)


def test_jacobian_of_rigid_motion_is_one_everywhere():
    reference = image(np.zeros((20, 30, 40), np.float32), spacing=(1.0, 1.0, 1.0))
    rigid = sitk.Euler3DTransform((15.0, 10.0, 20.0), 0.1, 0.05, 0.2, (3.0, -2.0, 1.0))
    assert np.allclose(jacobian_range(rigid, reference), (1.0, 1.0), atol=1e-6)
    scaling = sitk.ScaleTransform(3, (1.2, 1.0, 1.0))
    assert np.allclose(jacobian_range(scaling, reference), (1.2, 1.2), atol=1e-6)


def test_warps_follow_a_translation_and_keep_the_volume():
    mask = np.zeros((20, 30, 40), np.uint8)
    mask[5:12, 10:20, 10:25] = 1
    moving = image(mask, spacing=(1.0, 1.0, 2.0))
    shift_mm = (3.0, 4.0, 4.0)                      # x, y, z in mm: 3, 4 and 2 voxels
    moved = sitk.GetArrayFromImage(warp_mask(moving, moving, sitk.TranslationTransform(3, shift_mm)))
    assert moved.sum() == mask.sum()
    assert np.array_equal(moved[3:10, 6:16, 7:22], mask[5:12, 10:20, 10:25])   # current p maps to prior p + shift
    warped = sitk.GetArrayFromImage(warp_image(sitk.Cast(moving, sitk.sitkFloat32) * 100 - 50, moving,
                                               sitk.TranslationTransform(3, (1000.0, 0, 0))))
    assert np.all(warped == -50)                    # outside the prior scan: its minimum, not 0


def test_tumour_volume_changes_by_the_requested_ratio():
    ct, label = make_phantom(2)
    rng = np.random.default_rng(0)
    for ratio in (0.5, 1.6):
        changed, mask = change_tumour_volume(ct.astype(np.float32), label, ratio, rng, (1.5, 1.5, 2.5))
        assert mask.sum() / label.sum() == pytest.approx(ratio, rel=0.02)
        assert (mask.astype(bool) ^ label.astype(bool)).any()
        inside = mask.astype(bool) & ~label.astype(bool)
        if ratio > 1:                               # grown voxels look like tumour (30 HU) more than lung (-850)
            assert np.median(changed[inside]) > -410
        else:                                       # and vacated ones like the lung around them
            assert np.median(changed[label.astype(bool) & ~mask.astype(bool)]) < -410


def test_simulated_followup_truth_is_the_prior_warped_by_its_transform(phantom_followup):
    prior, prior_mask, followup = phantom_followup
    rewarped = sitk.GetArrayFromImage(warp_mask(prior_mask, followup.image, followup.transform))
    assert dice(rewarped, sitk.GetArrayFromImage(followup.mask)) > 0.99
    assert followup.volume_ratio == pytest.approx(1.0, abs=0.1)
    assert followup.image.GetSize() == prior.GetSize()


def test_ct_detection():
    ct, _ = make_phantom(2)
    assert looks_like_ct(image(ct))
    assert not looks_like_ct(image((ct.astype(np.float32) + 1024) / 10))


def test_prior_perturbations():
    rng = np.random.default_rng(0)
    images = torch.zeros(4, 3, 8, 16, 16)
    images[:, :2] = 1.0
    images[:, 2, 2:6, 4:12, 4:12] = 1.0
    dropped = perturb_prior(images, rng, drop=1.0, perturb=0.0)
    assert torch.all(dropped[:, 1:] == 0) and torch.equal(dropped[:, 0], images[:, 0])
    assert torch.equal(perturb_prior(images, rng, drop=0.0, perturb=0.0), images)
    changed = perturb_prior(images, np.random.default_rng(3), drop=0.0, perturb=1.0)
    assert torch.equal(changed[:, :2], images[:, :2])
    assert any(not torch.equal(changed[b, 2], images[b, 2]) for b in range(4))
    mask = images[0, 2:]
    assert torch.equal(shift(mask, (0, 1, -2))[0, 2:6, 5:13, 2:10], mask[0, 2:6, 4:12, 4:12])
    assert dilate(mask, 1).sum() > mask.sum() > erode(mask, 1).sum()
    assert torch.equal(erode(dilate(mask, 1), 1), mask)     # closing a box gives the box


def test_registration_quality_gates_refuse_with_the_figure_that_failed():
    """Folding, a poor final metric and a GTV outside the current CT's body are refused, each saying so."""
    from diffumamba.propagation.pipeline import MAX_FINAL_METRIC, MAX_RIGID_METRIC, check_registration
    from diffumamba.propagation.registration import Registration, RegistrationError

    ct, label = make_phantom(0)
    current = image(ct)
    warped = label.astype(np.uint8)
    good = Registration(None, None, {"deformable": 1.0}, MAX_RIGID_METRIC - 0.3, MAX_FINAL_METRIC - 0.5)
    check_registration(good, warped, current, (0.7, 1.4))                   # a plausible registration passes
    with pytest.raises(RegistrationError, match=r"folds space \(smallest Jacobian determinant -0.20"):
        check_registration(good, warped, current, (-0.2, 1.4))
    poor = Registration(None, None, {"deformable": 1.0}, MAX_RIGID_METRIC - 0.3, MAX_FINAL_METRIC + 0.05)
    with pytest.raises(RegistrationError, match="matched the scans poorly \\(final metric .*same patient"):
        check_registration(poor, warped, current, (0.7, 1.4))
    poor_rigid = Registration(None, None, {}, MAX_RIGID_METRIC + 0.05, MAX_RIGID_METRIC + 0.05)
    with pytest.raises(RegistrationError, match="matched the scans poorly \\(rigid metric"):
        check_registration(poor_rigid, warped, current, (0.7, 1.4))
    air = np.zeros_like(warped)
    air[:3, :3, :3] = 1                                                    # a corner of air outside the body
    assert ct[:3, :3, :3].max() < -500
    with pytest.raises(RegistrationError, match="0 % of the registered prior GTV lies inside the current scan's body"):
        check_registration(good, air, current, (0.7, 1.4))
    with pytest.raises(RegistrationError, match="falls outside the current scan"):
        check_registration(good, np.zeros_like(warped), current, (0.7, 1.4))
