"""Experiment planning and the preprocessed-case cache (on the real lung CTs)."""

import json

import numpy as np
import pytest

from diffumamba.cli import main
from diffumamba.data import RawDataset
from diffumamba.data.cache import load_case, preprocess_cases
from diffumamba.data.fingerprint import compute_fingerprint, fingerprint_hash
from diffumamba.data.plan import Plan, estimate_memory_gb, make_plan, plan_topology
from diffumamba.nets import build_network, lung_ct_3d


def fake_fingerprint(spacings, shapes):
    return {"spacings": spacings, "shapes_after_crop": shapes, "channel_names": ["CT"],
            "labels": {"background": 0, "GTV": 1},
            "foreground_intensities": [{"mean": 0.0, "std": 1.0, "percentile_00_5": -1.0, "percentile_99_5": 1.0}]}


def test_topology_reproduces_the_lung_preset():
    kernels, strides = plan_topology([80, 192, 160], [1.24, 0.79, 0.79])
    assert kernels == lung_ct_3d().kernel_sizes and strides == lung_ct_3d().strides


def test_thick_slices_get_in_plane_kernels_first():
    kernels, strides = plan_topology([24, 224, 224], [5.0, 0.6, 0.6])
    assert kernels[0] == [1, 3, 3] and strides[1] == [1, 2, 2]
    assert kernels[-1] == [3, 3, 3]                                  # once 3-wide, always 3-wide


def test_plan_fits_the_memory_budget_and_is_divisible():
    fp = fake_fingerprint([[1.24, 0.79, 0.79]] * 4, [[252, 512, 512]] * 4)
    for budget in (2.0, 8.0):
        plan = make_plan(fp, "h", memory_budget_gb=budget)
        config = plan.network_config()
        assert all(p % d == 0 for p, d in zip(plan.patch_size, config.size_divisor()))
        assert estimate_memory_gb(plan.patch_size, config.strides, plan.batch_size) * 0.5 <= budget
    assert make_plan(fp, "h", memory_budget_gb=2.0).patch_size < make_plan(fp, "h").patch_size
    assert make_plan(fp, "h", max_patch=[32, 64, 64]).patch_size == [32, 64, 64]


def test_anisotropic_data_take_the_10th_percentile_on_the_coarse_axis():
    fp = fake_fingerprint([[5.0, 0.7, 0.7]] * 9 + [[1.0, 0.7, 0.7]], [[60, 512, 512]] * 10)
    assert make_plan(fp, "h").target_spacing[0] == pytest.approx(np.percentile([5.0] * 9 + [1.0], 10))


def test_plan_json_round_trip_and_hash():
    plan = make_plan(fake_fingerprint([[1.0, 1.0, 1.0]], [[64, 64, 64]]), "h", network="umambabot")
    again = Plan.from_json(plan.to_json())
    assert again == plan and again.hash() == plan.hash()
    assert type(build_network(again.network_config())).__name__ == "UMambaBot"
    assert make_plan(fake_fingerprint([[1.0, 1.0, 1.0]], [[64, 64, 64]]), "h").hash() != plan.hash()


def test_cache_on_real_lung_cts_is_reused(lung_dataset, tmp_path):
    dataset = RawDataset(lung_dataset)
    fp = compute_fingerprint(dataset)
    plan = make_plan(fp, fingerprint_hash(fp), max_patch=[16, 64, 64])
    cases = dataset.training_cases()
    folder, computed = preprocess_cases(cases, plan, tmp_path)
    assert computed == 2 and folder.name == f"plan_{plan.hash()[:12]}"
    data, label, props = load_case(folder, "lung2")
    assert data.shape[0] == 1 and data.shape[1:] == label.shape and data.dtype == np.float32
    assert props.original_shape == (61, 512, 512)
    assert (label > 0).sum() * np.prod(plan.target_spacing) == pytest.approx(24_644 * 5.0 * 0.627 ** 2, rel=0.1)
    stamp = (folder / "cases" / "lung2.npz").stat().st_mtime_ns
    assert preprocess_cases(cases, plan, tmp_path) == (folder, 0)
    assert (folder / "cases" / "lung2.npz").stat().st_mtime_ns == stamp
    assert Plan.from_json((folder / "plan.json").read_text()) == plan


def test_preprocess_command(lung_dataset, tmp_path, capsys):
    out = tmp_path / "pre"
    assert main(["preprocess", str(lung_dataset), "--out", str(out), "--max-patch", "16", "64", "64"]) == 0
    printed = capsys.readouterr().out
    assert "2 case(s) preprocessed" in printed and "patch [16, 64, 64]" in printed
    assert json.loads((out / "fingerprint.json").read_text())["cases"] == ["lung1", "lung2"]
    assert main(["preprocess", str(lung_dataset), "--out", str(out), "--max-patch", "16", "64", "64"]) == 0
    assert "0 case(s) preprocessed, 2 already cached" in capsys.readouterr().out
    assert main(["preprocess", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "dataset.json is missing" in capsys.readouterr().err


def _tiny_raw_dataset(root):
    """Three small CT-like cases as uncompressed NRRD (a file edited in place keeps its size)."""
    import SimpleITK as sitk

    from conftest import make_dataset

    make_dataset(root, ["c0", "c1", "c2"])
    rng = np.random.default_rng(0)
    for k in range(3):
        label = np.zeros((12, 24, 24), np.uint8)
        label[4:8, 8:14, 8:14] = 1
        image = (rng.normal(-700, 30, label.shape) + 700.0 * label).astype(np.int16)
        for array, path in ((image, root / "imagesTr" / f"c{k}_0000.nrrd"), (label, root / "labelsTr" / f"c{k}.nrrd")):
            written = sitk.GetImageFromArray(array)
            written.SetSpacing((1.0, 1.0, 2.0))
            sitk.WriteImage(written, str(path))
    return root


def _tiny_plan(dataset):
    fp = compute_fingerprint(dataset)
    return make_plan(fp, fingerprint_hash(fp), max_patch=[8, 16, 16])


def test_a_replaced_label_is_recomputed_even_with_the_same_size_and_time(tmp_path):
    import os

    import SimpleITK as sitk

    root = _tiny_raw_dataset(tmp_path / "Dataset950_Tiny")
    dataset = RawDataset(root)
    plan = _tiny_plan(dataset)
    folder, computed = preprocess_cases(dataset.training_cases(), plan, tmp_path / "pre")
    assert computed == 3
    old_label = load_case(folder, "c1")[1]
    path = root / "labelsTr" / "c1.nrrd"
    stat = path.stat()
    moved = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    moved = np.roll(moved, 3, axis=2)                            # the corrected contour: same size, another place
    image = sitk.GetImageFromArray(moved)
    image.SetSpacing((1.0, 1.0, 2.0))
    sitk.WriteImage(image, str(path))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))       # e.g. copied with 'cp -p' / rsync -t
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    assert preprocess_cases(dataset.training_cases(), plan, tmp_path / "pre") == (folder, 1)
    new_label = load_case(folder, "c1")[1]
    assert not np.array_equal(new_label, old_label) and np.array_equal(new_label, np.roll(old_label, 3, axis=2))
    # A newer time alone (content as cached) is a change too: the case is recomputed once, then cached.
    os.utime(root / "imagesTr" / "c2_0000.nrrd", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert preprocess_cases(dataset.training_cases(), plan, tmp_path / "pre") == (folder, 1)
    assert preprocess_cases(dataset.training_cases(), plan, tmp_path / "pre") == (folder, 0)


def test_a_corrupt_cache_file_is_named_and_recomputed(tmp_path):
    root = _tiny_raw_dataset(tmp_path / "Dataset950_Tiny")
    dataset = RawDataset(root)
    plan = _tiny_plan(dataset)
    folder, _ = preprocess_cases(dataset.training_cases(), plan, tmp_path / "pre")
    good = load_case(folder, "c0")[0]
    npz = folder / "cases" / "c0.npz"
    npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])   # a disk that filled up, a copy cut short
    with pytest.raises(ValueError, match=r"cached case c0 .*c0\.npz.* is unreadable.*delete"):
        load_case(folder, "c0")
    assert preprocess_cases(dataset.training_cases(), plan, tmp_path / "pre") == (folder, 1)
    assert np.array_equal(load_case(folder, "c0")[0], good)
    (folder / "cases" / "c2.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"cached case c2 .*c2\.json.* is unreadable"):
        load_case(folder, "c2")
    assert preprocess_cases(dataset.training_cases(), plan, tmp_path / "pre") == (folder, 1)


def test_a_replaced_image_updates_the_fingerprint_the_plan_normalises_with(tmp_path):
    """The intensity figures in fingerprint.json were recomputed only when the case names changed: a replaced
    image kept the old CT statistics in the plan."""
    import SimpleITK as sitk

    from diffumamba.data.pipeline import prepare

    root = _tiny_raw_dataset(tmp_path / "Dataset950_Tiny")
    first = prepare(root, tmp_path / "pre", max_patch=[8, 16, 16], show_progress=False)
    path = root / "imagesTr" / "c1_0000.nrrd"
    brighter = sitk.GetArrayFromImage(sitk.ReadImage(str(path))) + 300
    image = sitk.GetImageFromArray(brighter.astype(np.int16))
    image.SetSpacing((1.0, 1.0, 2.0))
    sitk.WriteImage(image, str(path))
    second = prepare(root, tmp_path / "pre", max_patch=[8, 16, 16], show_progress=False)
    assert second.plan.intensities != first.plan.intensities and second.computed == 3
    third = prepare(root, tmp_path / "pre", max_patch=[8, 16, 16], show_progress=False)
    assert third.plan.intensities == second.plan.intensities and third.computed == 0
