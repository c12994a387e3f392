"""nnU-Net's rotation and scaling of an enlarged box, cropped back to the patch (training.spatial_augmentation).

The fix this guards: rotating the training patch itself filled its corners with zeros labelled background (on a
real brain MRI 28 % of a rotated 20 x 64 x 64 patch); nnU-Net rotates a larger box and rotates thin
patches in-plane only.
"""

import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import tumour_case

from diffumamba.nets import NetworkConfig
from diffumamba.training import spatial_augmentation as sa
from diffumamba.training.sampling import PatchSampler, TrainingCase
from diffumamba.training.trainer import Trainer, TrainSettings

BRAIN_PATCH = (20, 64, 64)


@pytest.mark.parametrize("patch, in_plane, sampling", [
    # The boxes of nnunetv2 2.8.1's get_patch_size (the 75s rounded up to the patch's parity).
    ((20, 64, 64), True, (20, 76, 76)),
    ((24, 64, 64), False, (62, 102, 80)),
    ((128, 128, 128), False, (206, 206, 206)),
    ((40, 96, 160), True, (40, 188, 188)),
    ((64, 64), False, (76, 76)),
    ((32, 128), False, (76, 150)),
])
def test_plans_follow_nnunet(patch, in_plane, sampling):
    plan = sa.spatial_plan(patch)
    assert plan.in_plane == in_plane and plan.sampling_size == sampling
    assert all((s - p) % 2 == 0 for s, p in zip(plan.sampling_size, plan.patch_size))
    if in_plane:
        assert plan.rotation == (math.pi, 0.0, 0.0) and plan.scaled_axes == (1, 2)
    assert sa.spatial_plan(patch, enlarged=False).sampling_size == patch


def forced(plan, angles, scale=1.0, keys=("image", "label"), modes=("bilinear", "nearest")):
    transform = sa.RandRotateScaleCropd(list(keys), list(modes), plan)

    def fixed(data=None):
        transform.angles, transform.scale = list(angles), scale
    transform.randomize = fixed
    return transform


def test_the_transformed_box_stays_centred_on_the_crop():
    plan = sa.spatial_plan((20, 32, 32))
    box = torch.randn(1, *plan.sampling_size)
    m = plan.margin
    crop = box[:, m[0]:m[0] + 20, m[1]:m[1] + 32, m[2]:m[2] + 32]
    plain = forced(plan, [0.0, 0.0, 0.0])({"image": box, "label": box})["image"]
    torch.testing.assert_close(torch.as_tensor(plain), crop)
    # A near-zero rotation goes through MONAI's Affine; it must land on the same voxels, not half a voxel off.
    tiny = forced(plan, [1e-7, 0.0, 0.0])({"image": box, "label": box})
    torch.testing.assert_close(torch.as_tensor(tiny["image"]), crop, atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.as_tensor(tiny["label"]), crop, atol=1e-4, rtol=0)


def test_in_plane_rotation_never_mixes_slices():
    plan = sa.spatial_plan(BRAIN_PATCH)
    slices = torch.arange(1, 21, dtype=torch.float32)[:, None, None].expand(20, *plan.sampling_size[1:])[None]
    out = torch.as_tensor(forced(plan, [0.9, 0.0, 0.0], scale=1.3)({"image": slices, "label": slices})["label"])
    assert out.shape == (1, *BRAIN_PATCH)
    for k in range(20):
        assert set(torch.unique(out[0, k]).tolist()) <= {0.0, k + 1.0}


def test_sampler_margin_grows_the_same_patch():
    rng = np.random.default_rng(0)
    case = TrainingCase.from_arrays("c", rng.normal(size=(1, 30, 50, 50)).astype(np.float32),
                                    (rng.random((30, 50, 50)) > 0.999).astype(np.int16))
    plain = PatchSampler([case], (8, 16, 16), 3, seed=4).batch()
    grown = PatchSampler([case], (8, 16, 16), 3, seed=4, margin=(0, 6, 6)).batch()
    assert grown[0].shape == (3, 1, 8, 28, 28)
    np.testing.assert_array_equal(grown[0][..., 6:-6, 6:-6], plain[0])
    np.testing.assert_array_equal(grown[1][..., 6:-6, 6:-6], plain[1])


@pytest.fixture(scope="module")
def brain_mri(shared_data):
    """A real T1 brain MRI (patient 01, before treatment), z-scored as the MR preprocessing does."""
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(shared_data / "brain_tumor_progression" / "01" /
                                                      "Pre_Scan_T1.nii.gz"))).astype(np.float32)
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(shared_data / "brain_tumor_progression" / "01" /
                                                     "Pre_Mask.nii.gz")))
    data = ((image - image.mean()) / image.std())[None]
    return TrainingCase.from_arrays("01_pre", data, (mask > 0).astype(np.int16))


def padded_fraction(images: torch.Tensor) -> float:
    return float((images.abs() < 1e-6).float().mean())


def test_rotated_real_brain_patches_are_not_mostly_padding(brain_mri):
    """On a real brain MRI, rotated training patches: the in-patch variant (3D rotation of the 20 x 64 x 64 patch
    itself) is padding in a large share of its voxels, nnU-Net's enlarged in-plane variant in few of them."""
    assert padded_fraction(torch.from_numpy(brain_mri.data)) < 1e-3     # the MRI itself has no exact zeros
    plan = sa.spatial_plan(BRAIN_PATCH)
    rng = np.random.default_rng(0)
    enlarged = PatchSampler([brain_mri], BRAIN_PATCH, 1, seed=0, margin=plan.margin)
    plain = PatchSampler([brain_mri], BRAIN_PATCH, 1, seed=0)
    from monai.transforms import RandAffined

    in_patch = RandAffined(["image"], prob=1.0, rotate_range=(math.radians(30),) * 3, padding_mode="zeros")
    in_patch.set_random_state(0)
    ours, before = [], []
    for _ in range(20):
        box = torch.from_numpy(enlarged.batch()[0][0])
        angle = float(rng.uniform(-math.pi, math.pi))
        ours.append(padded_fraction(torch.as_tensor(forced(plan, [angle, 0, 0], keys=("image",),
                                                           modes=("bilinear",))({"image": box})["image"])))
        before.append(padded_fraction(torch.as_tensor(in_patch({"image": torch.from_numpy(plain.batch()[0][0])})["image"])))
    # Measured: in-patch 0.28 of the voxels, enlarged in-plane 0.016 (the diagonal corners nnU-Net's box also
    # leaves uncovered).
    print(f"padded fraction: in-patch {np.mean(before):.3f}, enlarged in-plane {np.mean(ours):.3f}")
    assert np.mean(before) > 0.1
    assert np.mean(ours) < np.mean(before) / 4


def test_trainer_draws_patches_from_the_enlarged_box(shared_data, tmp_path):
    case = tumour_case(shared_data, "lung2")
    config = NetworkConfig(network="resunet", spatial_dims=3, in_channels=1, num_classes=2,
                           features_per_stage=[8, 16, 32], kernel_sizes=[[3, 3, 3]] * 3,
                           strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]], n_blocks_per_stage=[1, 1, 1],
                           n_blocks_per_stage_decoder=[1, 1], patch_size=[8, 32, 32])
    trainer = Trainer(config, [case], [], tmp_path, TrainSettings(device="cpu", validate_every=0),
                      meta={"labels": {"background": 0, "GTV": 1}})
    assert trainer.batches.spatial_plan.in_plane and trainer.batches.spatial_plan.sampling_size == (8, 38, 38)
    seed = trainer._epoch_randomness(0)
    sampler = trainer.batches.make_sampler(trainer.train_cases, seed)
    assert sampler.sampling_size == (8, 38, 38)
    images, labels = trainer.batches.draw(sampler)
    assert images.shape == (2, 1, 8, 32, 32) and labels.shape == (2, 1, 8, 32, 32)
    assert trainer.batches.make_sampler(trainer.train_cases, seed, for_draw=False).sampling_size == (8, 32, 32)
    legacy = Trainer(config, [case], [], tmp_path / "b", TrainSettings(device="cpu", spatial_augmentation="in-patch"))
    assert legacy.batches.spatial_plan is None
    assert legacy.batches.make_sampler(legacy.train_cases, 0).sampling_size == (8, 32, 32)
