"""nnU-Net v2 raw datasets: reading, refusals, and the fingerprint on the real lung CTs."""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from diffumamba.data import RawDataset
from diffumamba.data.fingerprint import compute_fingerprint, fingerprint_hash, nonzero_bbox, read_case

from conftest import make_dataset


def write(path, array, spacing=(1.0, 1.0, 1.0)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))


def test_reads_the_real_lung_dataset(lung_dataset):
    dataset = RawDataset(lung_dataset)
    assert dataset.channel_names == ["CT"] and dataset.labels == {"background": 0, "GTV": 1}
    cases = dataset.training_cases()
    assert [c.name for c in cases] == ["lung1", "lung2"]
    data, label, spacing, _ = read_case(cases[0])
    assert data.shape == (1, 48, 512, 512) and label.shape == (48, 512, 512)
    assert spacing == pytest.approx((5.0, 0.5703, 0.5703), abs=1e-3)
    assert int((label > 0).sum()) == 837
    assert dataset.test_cases() == []


def test_fingerprint_of_the_real_lung_tumours(lung_dataset):
    dataset = RawDataset(lung_dataset)
    fp = compute_fingerprint(dataset)
    assert fp["cases"] == ["lung1", "lung2"]
    assert fp["spacings"][1] == pytest.approx([5.0, 0.627, 0.627], abs=1e-3)
    stats = fp["foreground_intensities"][0]
    # A solid lung tumour is soft tissue: its median HU lies far above aerated lung (about -850).
    assert -300 < stats["median"] < 150
    assert stats["min"] <= stats["percentile_00_5"] < stats["median"] < stats["percentile_99_5"] <= stats["max"]
    assert stats["std"] > 0
    assert fingerprint_hash(fp) == fingerprint_hash(compute_fingerprint(dataset))   # seeded, reproducible
    assert fingerprint_hash(fp) != fingerprint_hash(compute_fingerprint(dataset, seed=7))


def test_nonzero_bbox():
    data = np.zeros((2, 5, 6, 7), np.float32)
    data[1, 1:3, 2, 4:6] = 1
    assert nonzero_bbox(data) == (slice(1, 3), slice(2, 3), slice(4, 6))
    assert nonzero_bbox(np.zeros((1, 3, 3, 3))) == (slice(0, 3),) * 3


@pytest.fixture
def synthetic(tmp_path):
    root = make_dataset(tmp_path / "ds", ["a", "b"], channels=("CT", "PET"), ending=".nii.gz")
    for case in ("a", "b"):
        for channel in (0, 1):
            write(root / "imagesTr" / f"{case}_{channel:04d}.nii.gz", np.ones((4, 5, 6), np.float32))
        write(root / "labelsTr" / f"{case}.nii.gz", np.ones((4, 5, 6), np.uint8))
    return root


def test_two_channel_dataset(synthetic):
    cases = RawDataset(synthetic).training_cases()
    assert [len(c.images) for c in cases] == [2, 2]
    assert read_case(cases[0])[0].shape == (2, 4, 5, 6)


@pytest.mark.parametrize("breakage, message", [
    ("no_json", "dataset.json is missing"),
    ("bad_json", "not valid JSON"),
    ("no_labels_key", "lacks labels"),
    ("region", "is a region"),
    ("channel", "channels [0], expected 0..1"),
    ("label", "labelsTr/b.nii.gz is missing"),
    ("suffix", "no _XXXX channel suffix"),
    ("count", "numTraining = 5"),
])
def test_dataset_problems_are_named(synthetic, breakage, message):
    meta = json.loads((synthetic / "dataset.json").read_text())
    if breakage == "no_json":
        (synthetic / "dataset.json").unlink()
    elif breakage == "bad_json":
        (synthetic / "dataset.json").write_text("{")
    elif breakage == "no_labels_key":
        del meta["labels"]
    elif breakage == "region":
        meta["labels"]["whole"] = [1, 2]
    elif breakage == "channel":
        (synthetic / "imagesTr" / "b_0001.nii.gz").unlink()
    elif breakage == "label":
        (synthetic / "labelsTr" / "b.nii.gz").unlink()
    elif breakage == "suffix":
        write(synthetic / "imagesTr" / "c.nii.gz", np.ones((2, 2, 2), np.float32))
    elif breakage == "count":
        meta["numTraining"] = 5
    if breakage not in ("no_json", "bad_json"):
        (synthetic / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises((ValueError, FileNotFoundError), match=message.replace("[", r"\[").replace("]", r"\]")):
        RawDataset(synthetic).training_cases()


def test_label_on_another_grid_is_refused(synthetic):
    write(synthetic / "labelsTr" / "a.nii.gz", np.ones((4, 5, 6), np.uint8), spacing=(1.0, 1.0, 2.0))
    with pytest.raises(ValueError, match="a.nii.gz is not on the grid"):
        read_case(RawDataset(synthetic).training_cases()[0])


def test_corrupt_image_is_named(synthetic):
    (synthetic / "imagesTr" / "a_0001.nii.gz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"a: .*a_0001.nii.gz (is truncated or corrupt|cannot be read)|a: cannot read a_0001"):
        read_case(RawDataset(synthetic).training_cases()[0])
