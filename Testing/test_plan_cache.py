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
            "labels": {"background": 0, "GTV": 1}, "foreground_intensities": [{"mean": 0.0}]}


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
