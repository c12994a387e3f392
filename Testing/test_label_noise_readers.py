"""The readers' label-noise model (issue 32) on hand-made masks and on a real LIDC nodule: each kind changes the
label the way its reader error would, sizes stay in range, and label scarcity counts patients."""

import numpy as np
import pytest
from scipy import ndimage

from diffumamba.training.case_roles import assign_roles
from diffumamba.training.label_noise import READER_SIZES, choose_corruptions, corrupt_label, parse_corruption


def _ball(shape=(16, 32, 32), centre=(8, 16, 16), radius=5):
    grid = np.indices(shape)
    return (sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius ** 2).astype(np.int16)


def test_the_readers_model_gives_every_kind_with_sizes_in_range_and_is_seeded():
    names = [f"c{i}" for i in range(20)]
    chosen = choose_corruptions(names, 0.5, seed=3, noise_model="readers")
    assert len(chosen) == 10 and chosen == choose_corruptions(names, 0.5, seed=3, noise_model="readers")
    kinds = [parse_corruption(c, 99) for c in chosen.values()]
    assert {k for k, _ in kinds} == {"dilate", "erode", "shift", "miss", "vessel"}
    for kind, size in kinds:
        low, high = READER_SIZES.get(kind, (99, 99))
        assert low <= size <= high, (kind, size)
    # the contour model is unchanged: bare kinds, sized by --corrupt-voxels
    assert set(choose_corruptions(names, 0.5, seed=3).values()) == {"dilate", "erode", "shift"}
    with pytest.raises(ValueError, match="label-noise model"):
        choose_corruptions(names, 0.5, seed=3, noise_model="typos")


def test_sizes_recorded_with_the_kind_set_the_corruption():
    label = _ball()
    rng = np.random.default_rng(0)
    one, three = corrupt_label(label, "dilate:1", 9, rng), corrupt_label(label, "dilate:3", 9, rng)
    assert label.sum() < one.sum() < three.sum()
    assert np.array_equal(one, corrupt_label(label, "dilate", 1, rng))


def test_a_missed_part_is_a_cap_of_the_lesion_cut_by_a_plane():
    label = _ball()
    for seed in range(5):
        missed = corrupt_label(label, "miss", 1, np.random.default_rng(seed))
        kept = missed.sum() / label.sum()
        assert 0.55 <= kept <= 0.85, kept                      # 20-40 % removed (a quantile of voxels)
        assert (label[missed > 0] == 1).all()                  # nothing added
        assert ndimage.label(missed)[1] == 1                   # a plane cut leaves one piece
    single = np.zeros((3, 3, 3), np.int16)
    single[1, 1, 1] = 1
    assert corrupt_label(single, "miss", 1, np.random.default_rng(0)).sum() == 1   # never cut to nothing


def test_a_merged_vessel_follows_the_dense_tissue_touching_the_lesion():
    label = _ball()
    image = np.where(label > 0, 1.0, -1.0).astype(np.float32)
    image[8, 16, 21:32] = 1.0                                  # a vessel leaving the ball along x
    image[8, 2, 2:8] = 1.0                                     # dense tissue that does not touch it
    merged = corrupt_label(label, "vessel:3", 1, np.random.default_rng(0), image)
    added = (merged > 0) & (label == 0)
    assert set(map(tuple, np.argwhere(added))) == {(8, 16, x) for x in range(22, 25)}    # 3 steps along the vessel
    assert ndimage.label(merged)[1] == 1


def test_a_lesion_touching_nothing_dense_gets_a_drawn_vessel_so_every_corruption_corrupts():
    label = _ball()
    image = np.where(label > 0, 1.0, -1.0).astype(np.float32)
    merged = corrupt_label(label, "vessel:2", 1, np.random.default_rng(1), image)
    added = (merged > 0) & (label == 0)
    assert added.sum() >= 3 and ndimage.label(merged)[1] == 1 and (merged[label > 0] == 1).all()
    with pytest.raises(ValueError, match="needs the image"):
        corrupt_label(label, "vessel", 2, np.random.default_rng(0))


def test_every_readers_kind_changes_a_real_nodule_and_the_vessel_takes_dense_tissue(shared_data):
    import SimpleITK as sitk

    folder = shared_data / "lidc_idri_nodule_vois"
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "image" / "LIDC-IDRI-0001_R_1.nii.gz"))).astype(np.float32)
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "mask" / "LIDC-IDRI-0001_R_1.nii.gz"))).astype(np.int16)
    for kind in ("dilate:1", "erode:1", "shift:1", "miss", "vessel:3"):
        corrupted = corrupt_label(label, kind, 1, np.random.default_rng(0), image)
        assert not np.array_equal(corrupted, label), kind
    merged = corrupt_label(label, "vessel:3", 1, np.random.default_rng(0), image)
    added = (merged > 0) & (label == 0)
    assert added.any() and image[added].min() >= np.percentile(image[label > 0], 10)


def test_label_scarcity_by_patient_keeps_each_patients_cases_together():
    names = [f"P{p:02d}_n{k}" for p in range(20) for k in range(1 + p % 3)]
    roles = assign_roles(names, seed=0, labeled_fraction=0.25, group_pattern=r"^(P\d+)_")
    patients = {n.split("_")[0] for n in roles.labeled}
    assert len(patients) == 5                                   # 25 % of 20 patients
    assert set(roles.labeled) == {n for n in names if n.split("_")[0] in patients}
    assert not {n.split("_")[0] for n in roles.unlabeled} & patients
    by_case = assign_roles(names, seed=0, labeled_fraction=0.25)
    assert len(by_case.labeled) == round(0.25 * len(names))     # without a pattern: a fraction of cases, as before
