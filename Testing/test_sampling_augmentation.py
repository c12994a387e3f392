"""Patch sampling with foreground oversampling, and the MONAI augmentation pipeline."""

import numpy as np
import pytest
import torch

from diffumamba.training.augmentation import training_transforms
from diffumamba.training.sampling import MAX_LOCATIONS, PatchSampler, TrainingCase


def blob_case(shape=(40, 64, 64), centre=(30, 50, 10), radius=2):
    label = np.zeros(shape, np.int16)
    label[tuple(slice(c - radius, c + radius + 1) for c in centre)] = 1
    data = np.random.default_rng(0).normal(size=(1, *shape)).astype(np.float32)
    return TrainingCase.from_arrays("blob", data, label)


def test_forced_patches_contain_foreground_and_the_rest_are_random():
    sampler = PatchSampler([blob_case()], (16, 16, 16), batch_size=3, seed=1)
    assert sampler.n_foreground == 1
    hits = np.zeros(3)
    for _ in range(50):
        data, label = sampler.batch()
        assert data.shape == (3, 1, 16, 16, 16) and label.shape == (3, 1, 16, 16, 16)
        hits += (label.reshape(3, -1) > 0).any(1)
    assert hits[2] == 50                      # the last third always sees the tumour
    assert hits[:2].max() < 25                # a tiny blob is rarely hit by chance


def test_patch_data_matches_the_volume():
    case = blob_case()
    sampler = PatchSampler([case], (8, 8, 8), 1)
    data, label = sampler.crop(case, [3, 4, 5])
    np.testing.assert_array_equal(data, case.data[:, 3:11, 4:12, 5:13])
    np.testing.assert_array_equal(label, case.label[3:11, 4:12, 5:13])


def test_small_volumes_are_zero_padded():
    case = blob_case(shape=(6, 20, 20), centre=(3, 10, 10), radius=1)
    sampler = PatchSampler([case], (8, 16, 24), batch_size=2, seed=0)
    data, label = sampler.batch()
    assert data.shape == (2, 1, 8, 16, 24)
    assert (label[1] > 0).sum() == 27          # the whole 3x3x3 blob inside the forced patch
    assert (data[:, 0] == 0).any()             # padding present along the short axes


def test_sampling_is_reproducible_and_locations_are_capped():
    a = PatchSampler([blob_case()], (16, 16, 16), 2, seed=5).batch()
    b = PatchSampler([blob_case()], (16, 16, 16), 2, seed=5).batch()
    np.testing.assert_array_equal(a[0], b[0])
    big = TrainingCase.from_arrays("big", np.zeros((1, 30, 30, 30), np.float32), np.ones((30, 30, 30), np.int16))
    assert len(big.locations[1]) == MAX_LOCATIONS


def test_augmentation_keeps_shapes_and_label_values():
    case = blob_case(radius=6)
    item = {"image": torch.from_numpy(case.data[:, 20:36, 36:60, 0:24].copy()),
            "label": torch.from_numpy(case.label[None, 20:36, 36:60, 0:24].copy())}
    changed = 0
    for seed in range(8):
        out = training_transforms(3, seed=seed)(dict(item))
        assert out["image"].shape == item["image"].shape and out["label"].shape == item["label"].shape
        assert set(torch.unique(out["label"]).tolist()) <= {0.0, 1.0}
        changed += not torch.equal(torch.as_tensor(out["image"]), item["image"])
    assert changed >= 6


def test_augmentation_is_seeded():
    item = {"image": torch.randn(1, 12, 16, 16), "label": (torch.rand(1, 12, 16, 16) > 0.5).float()}
    a = training_transforms(3, seed=3)(dict(item))
    b = training_transforms(3, seed=3)(dict(item))
    torch.testing.assert_close(torch.as_tensor(a["image"]), torch.as_tensor(b["image"]))


@pytest.mark.parametrize("dims", [2, 3])
def test_elastic_option_runs(dims):
    shape = (1, 24, 24, 24)[: dims + 1]
    out = training_transforms(dims, elastic=True, seed=0)({"image": torch.randn(*shape),
                                                           "label": torch.zeros(*shape)})
    assert out["image"].shape == shape
