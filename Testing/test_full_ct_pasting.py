"""Full-CT training cases with several real LIDC lesions pasted into real chest CTs (issue 31), and the hard-negative
patch sampling a full-CT model trains with."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from diffumamba.convert.lidc_vois import _read_pair, read_host, read_voi_folder
from diffumamba.data.full_ct_pasting import paste_many, slabs_without
from diffumamba.data.lesion_pasting import Host, paste_lesion
from diffumamba.training.hard_negatives import approximate_hu, with_hard_negatives
from diffumamba.training.sampling import PatchSampler, TrainingCase


@pytest.fixture(scope="module")
def lung2(shared_data):
    name, image, tumour = read_host(shared_data / "pyradiomics_lung_ct" / "lung2_image.nrrd",
                                    shared_data / "pyradiomics_lung_ct" / "lung2_label.nrrd")
    return Host.from_image(image, name, tumour), tumour


@pytest.fixture(scope="module")
def lesions(shared_data):
    vois = sorted((v for v in read_voi_folder(shared_data / "lidc_idri_nodule_vois") if v.diameter_mm >= 10),
                  key=lambda v: v.name)
    return [_read_pair(v) for v in vois[:5]]


@pytest.fixture(scope="module")
def pasted(lung2, lesions):
    host, tumour = lung2
    return paste_many(host, lesions, np.random.default_rng(3), tumour)


def test_several_lesions_go_into_the_whole_ct_with_the_hosts_tumour_kept(lung2, pasted):
    host, tumour = lung2
    image, label, placements = pasted
    assert image.GetSize() == host.image.GetSize() and image.GetOrigin() == host.image.GetOrigin()
    assert len(placements) >= 3
    assert np.array_equal(label[tumour], np.ones(tumour.sum(), np.uint8))          # the GTV is still labelled
    pieces, count = ndimage.label(label)
    assert count >= len(placements) + ndimage.label(tumour)[1]                      # each lesion apart from the rest
    assert not set(np.unique(pieces[tumour])) & set(np.unique(pieces[label.astype(bool) & ~tumour]))
    new = label.astype(bool) & ~tumour
    assert host.lung[new].mean() > 0.6                                              # in the lungs (or on their border)


def test_outside_the_lesions_the_ct_is_the_host_voxel_for_voxel(lung2, pasted):
    """The box around each lesion lies on the host's voxels: beyond the lesion and its 4 mm fade the CT is the host
    exactly (a box half a voxel off would be the host interpolated: a blurred rectangle a network learns to find)."""
    host, _ = lung2
    image, label, _ = pasted
    before, after = sitk.GetArrayFromImage(host.image), sitk.GetArrayFromImage(image)
    spacing = host.image.GetSpacing()[::-1]
    near = ndimage.distance_transform_edt(~(label.astype(bool)), sampling=spacing) <= 4.5
    changed = before != after
    assert changed.any()
    assert not (changed & ~near).any()


def test_a_box_on_the_hosts_grid_is_the_host_beyond_the_lesion(lung2, lesions):
    """The same for one pasted lesion's own box, for box sizes with an odd voxel count before they were made even."""
    host, _ = lung2
    image, mask = lesions[0]
    for box_mm in (41.0, 50.0, 63.3):
        box, box_mask, _ = paste_lesion(host, image, mask, np.random.default_rng(1), box_mm, fine_grid_share=0.0)
        corner = np.array(host.image.TransformPhysicalPointToContinuousIndex(box.GetOrigin()))
        assert np.allclose(corner, np.round(corner), atol=1e-3), box_mm
        start = np.round(corner).astype(int)[::-1]
        region = tuple(slice(s, s + n) for s, n in zip(start, box.GetSize()[::-1]))
        far = ndimage.distance_transform_edt(sitk.GetArrayFromImage(box_mask) == 0,
                                             sampling=host.image.GetSpacing()[::-1]) > 4.5
        assert np.array_equal(sitk.GetArrayFromImage(box)[far], sitk.GetArrayFromImage(host.image)[region][far])


def test_a_boxed_ct_keeps_only_the_slabs_away_from_its_boxes():
    mask = np.zeros((64, 8, 8), bool)
    mask[40:51, 2:4, 2:4] = True                                   # boxes on slices 40-50, 5 mm slices
    assert slabs_without(mask, 5.0) == [slice(0, 36)]              # 20 mm = 4 slices off; the top 9 slices < 60 mm
    assert slabs_without(mask, 5.0, min_mm=40.0) == [slice(0, 36), slice(55, 64)]
    assert slabs_without(np.zeros((10, 4, 4), bool), 5.0) == [slice(0, 10)]


def test_convert_lidc_whole_ct_writes_grouped_full_ct_cases(shared_data, tmp_path):
    """``convert lidc --whole-ct``: a box-labelled host only as its slab without boxes, each copy with lesions and
    named so that the dataset's group pattern keeps it with its patient."""
    from diffumamba.cli import main
    from diffumamba.training.splits import case_groups

    source = tmp_path / "vois"
    (source / "image").mkdir(parents=True)
    (source / "mask").mkdir()
    vois_folder = shared_data / "lidc_idri_nodule_vois"
    with open(vois_folder / "metadata.csv") as handle:
        header, *rows = handle.read().splitlines()
    rows = [r for r in rows if float(r.split(",")[7]) >= 12][:3]
    (source / "metadata.csv").write_text("\n".join([header, *rows]) + "\n")
    for row in rows:
        name = row.split(",")[0]
        for part in ("image", "mask"):
            (source / part / name).symlink_to(vois_folder / part / name)
    dx = shared_data / "lung_pet_ct_dx_boxes" / "Lung_Dx-A0001"
    out = tmp_path / "Dataset999_Whole"
    assert main(["convert", "lidc", str(source), str(out), "--whole-ct", "2", "--pastes", "1",
                 "--host", str(dx / "ct"), str(dx / "boxes.json")]) == 0
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "GTV": 1}
    names = sorted(p.name[:-len("_0000.nii.gz")] for p in (out / "imagesTr").iterdir())
    assert names == ["Lung-Dx-A0001_w0z0"]
    assert case_groups(names + ["Lung-Dx-A0001"], meta["group_pattern"]) == {n: "Lung-Dx-A0001"
                                                                            for n in names + ["Lung-Dx-A0001"]}
    image = sitk.ReadImage(str(out / "imagesTr" / "Lung-Dx-A0001_w0z0_0000.nii.gz"))
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "labelsTr" / "Lung-Dx-A0001_w0z0.nii.gz")))
    boxes = json.loads((dx / "boxes.json").read_text())
    top = image.TransformIndexToPhysicalPoint((0, 0, image.GetSize()[2] - 1))[2]
    bottom = image.TransformIndexToPhysicalPoint((0, 0, 0))[2]
    nearest = min(abs(b["z_mm"] - z) for b in boxes for z in (top, bottom))
    assert all(not (min(bottom, top) <= b["z_mm"] <= max(bottom, top)) for b in boxes)
    assert nearest >= 20.0                                         # 20 mm or more from every boxed slice
    assert 1 <= ndimage.label(label)[1] <= 2 and label.sum() > 0


def _chest_phantom():
    """A 40 x 96 x 96 chest at 4 x 2 x 2 mm in HU: body (40 HU) in air, two lungs (-850), a tumour in the right."""
    z, y, x = np.mgrid[:40, :96, :96]
    hu = np.full((40, 96, 96), -1000.0)
    hu[((y - 48) / 40.0) ** 2 + ((x - 48) / 44.0) ** 2 <= 1] = 40.0
    for cx in (28, 68):
        hu[(((y - 48) / 26.0) ** 2 + ((x - cx) / 14.0) ** 2 <= 1) & (z >= 6) & (z < 34)] = -850.0
    label = np.zeros(hu.shape, np.uint8)
    tumour = ((z - 20) / 2.0) ** 2 + ((y - 48) / 4.0) ** 2 + ((x - 24) / 4.0) ** 2 <= 1
    hu[tumour], label[tumour] = 30.0, 1
    return hu, label


def test_hard_negatives_are_soft_tissue_near_the_lungs_far_from_the_tumour():
    hu, label = _chest_phantom()
    intensity = {"mean": 0.0, "std": 100.0}
    case = TrainingCase.from_arrays("chest", (hu / 100.0)[None].astype(np.float32), label)
    found = with_hard_negatives(case, intensity, (4.0, 2.0, 2.0))
    assert np.allclose(approximate_hu(case.data[0], intensity), hu, atol=1e-3)
    assert found.region is not None and found.negatives is not None
    z, y, x = (np.array(found.negatives)[:, k] for k in range(3))
    assert np.all(np.abs(hu[z, y, x] - 40.0) < 1)                        # soft tissue, never lung or air
    assert all(r.start <= c.min() and c.max() < r.stop for r, c in zip(found.region, (z, y, x)))
    tumour = np.argwhere(label > 0) * np.array([4.0, 2.0, 2.0])
    points = np.stack([z, y, x], 1) * np.array([4.0, 2.0, 2.0])
    distance = np.sqrt(((points[:, None, :] - tumour[None, ::7, :]) ** 2).sum(-1)).min(1)
    assert distance.min() >= 10.0 - 2.0                                  # 10 mm clearance (subsampled tumour)
    # a crop without lungs keeps the plain sampling
    small = TrainingCase.from_arrays("crop", np.zeros((1, 8, 8, 8), np.float32), np.zeros((8, 8, 8), np.uint8))
    assert with_hard_negatives(small, intensity, (1.0, 1.0, 1.0)).negatives is None


def test_the_sampler_centres_non_tumour_patches_on_hard_negatives_and_in_the_lung_box():
    from dataclasses import replace

    hu, label = _chest_phantom()
    case = replace(TrainingCase.from_arrays("chest", (hu / 100.0)[None].astype(np.float32), label),
                   negatives=np.array([[20, 48, 48], [12, 30, 60]]), region=(slice(10, 30), slice(20, 70), slice(30, 60)))
    patch = (8, 16, 16)
    sampler = PatchSampler([case], patch, 4, oversample_foreground=0.25, hard_negative=1.0, seed=0)
    centres = {tuple(s + p // 2 for s, p in zip(sampler.patch_start(case, False), patch)) for _ in range(40)}
    assert centres == {(20, 48, 48), (12, 30, 60)}
    tumour = {tuple(s + p // 2 for s, p in zip(sampler.patch_start(case, True), patch)) for _ in range(20)}
    assert all(label[c] for c in tumour)                              # foreground patches stay on the tumour
    data, labels = sampler.batch()
    assert labels[-1].any() and data.shape == (4, 1, *patch)
    half = PatchSampler([case], patch, 4, hard_negative=0.5, seed=0)
    hits = sum(tuple(s + p // 2 for s, p in zip(half.patch_start(case, False), patch)) in centres for _ in range(400))
    assert 150 < hits < 250                                           # about half of them
    plain = PatchSampler([case], patch, 4, in_region=True, seed=0)
    for _ in range(100):
        centre = [s + p // 2 for s, p in zip(plain.patch_start(case, False), patch)]
        assert all(r.start <= c < r.stop for r, c in zip(case.region, centre))
    anywhere = PatchSampler([case], patch, 4, seed=0)
    outside = sum(not all(r.start <= s + p // 2 < r.stop for r, s, p in zip(case.region, anywhere.patch_start(case, False), patch))
                  for _ in range(200))
    assert outside > 50                                               # without it, patches fall anywhere
    with pytest.raises(ValueError, match="hard_negative"):
        PatchSampler([case], patch, 2, hard_negative=1.5)
