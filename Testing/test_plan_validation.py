"""A plan is validated where it is read (issue 28, D8/D9/D15): absurd plans are refused in one line naming the file
and the field, and every plan the project makes, ships or imports still passes."""

import json
import zipfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from diffumamba.checkpoint import load_checkpoint, load_checkpoint_bytes, save_checkpoint, weights_only_bytes
from diffumamba.cli import main
from diffumamba.data.plan import PRESETS, Plan, make_plan
from diffumamba.data.plan_checks import MAX_PATCH_VOXELS, plan_problems, validate_plan
from diffumamba.nets import build_network

MODELS = Path(__file__).resolve().parents[1] / "DiffUMambaSeg" / "Resources" / "Models"
CT_STATS = {"mean": 40.0, "std": 90.0, "percentile_00_5": -200.0, "percentile_99_5": 250.0}


def fingerprint(channels=("CT",)):
    stats = [CT_STATS if c == "CT" else {} for c in channels]
    return {"spacings": [[3.0, 0.98, 0.98]] * 3, "shapes_after_crop": [[120, 512, 512]] * 3,
            "channel_names": list(channels), "labels": {"background": 0, "GTV": 1}, "foreground_intensities": stats}


def test_every_plan_the_project_makes_passes():
    """The checks must not refuse a real plan: the lung-cpu preset, the default planner, 2D, correction and
    propagation plans."""
    preset = PRESETS["lung-cpu"]
    plans = [make_plan(fingerprint(), "h", base_features=preset.features[0], max_features=preset.features[1],
                       max_patch=preset.max_patch, target_spacing=preset.target_spacing, inference=preset.inference,
                       task=task) for task in ("segmentation", "correction")]
    plans += [make_plan(fingerprint(), "h"), make_plan(fingerprint(), "h", spatial_dims=2),
              make_plan(fingerprint(("CT", "CT", "noNorm")), "h", task="propagation", max_patch=[32, 64, 64])]
    assert plans[0].patch_size == [48, 96, 96] and plans[1].network["in_channels"] == 4
    for plan in plans:
        assert plan_problems(asdict(plan)) == [], plan


def test_the_shipped_model_passes():
    packages = sorted(MODELS.glob("*.zip"))
    assert packages
    for package in packages:
        with zipfile.ZipFile(package) as archive:
            folds = [name for name in archive.namelist() if name.endswith(".safetensors")]
            assert folds
            for name in folds:
                header = load_checkpoint_bytes(archive.read(name), package / name)[0]   # validates its plan
                assert header["plan"]["patch_size"]
            if "plan.json" in archive.namelist():
                validate_plan(json.loads(archive.read("plan.json")), f"{package}/plan.json")


def test_the_cap_on_patch_voxels_lies_far_above_real_plans():
    """nnU-Net's MSD lung 3d_fullres patch (nets.config.lung_ct_3d) and our preset's are far below the cap."""
    assert 80 * 192 * 160 * 20 < MAX_PATCH_VOXELS < 4096 ** 3


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """An untrained checkpoint of a real (small) lung-cpu-like plan, and a CT-like image to run it on."""
    root = tmp_path_factory.mktemp("plans")
    plan = make_plan(fingerprint(), "h", base_features=4, max_features=8, max_patch=[8, 16, 16],
                     target_spacing=[3.0, 1.5, 1.5])
    config = plan.network_config()
    save_checkpoint(root / "good.safetensors", build_network(config), config, plan.checkpoint_meta())
    image = sitk.GetImageFromArray(np.full((8, 16, 16), -700, np.int16))
    image.SetSpacing((1.5, 1.5, 3.0))
    sitk.WriteImage(image, str(root / "ct.nrrd"))
    return root


@pytest.mark.parametrize("field,value", [("patch_size", [4096, 4096, 4096]), ("patch_size", [0, 0, 0]),
                                         ("target_spacing", [0, 0, 0]), ("target_spacing", [0.001] * 3)])
def test_predict_refuses_a_model_whose_plan_is_absurd(tiny, tmp_path, capsys, field, value):
    """Before: [4096]^3 crashed with a 275 GB allocation, [0, 0, 0] ran and segmented 45.3 ml instead of 34.9 ml,
    spacing 0 raised ZeroDivisionError and 0.001 mm an ITK exception."""
    header, state, _ = load_checkpoint(tiny / "good.safetensors")
    header["plan"][field] = value
    model = tmp_path / "edited.safetensors"
    model.write_bytes(weights_only_bytes(header, state))
    out = tmp_path / "out"
    assert main(["predict", str(tiny / "ct.nrrd"), "--model", str(model), "--out", str(out),
                 "--progress", "none"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and str(model) in error and field in error, error
    assert error.startswith("diffumamba predict: error:") and not out.exists()


def test_a_cached_plan_json_is_validated_when_read(tmp_path):
    plan = make_plan(fingerprint(), "h", max_patch=[16, 32, 32])
    assert Plan.from_json(plan.to_json()) == plan
    edited = {**asdict(plan), "patch_size": [-16, 32, 32]}
    with pytest.raises(ValueError, match=r"^cache/plan\.json: invalid plan: patch_size \[-16, 32, 32\] is not 2 or 3 "
                                         r"positive integers"):
        Plan.from_json(json.dumps(edited), "cache/plan.json")
    with pytest.raises(ValueError, match=r"^cache/plan\.json: not valid JSON"):
        Plan.from_json("{", "cache/plan.json")


def test_predict_refuses_a_checkpoint_without_a_plan(tiny, tmp_path, capsys):
    """A checkpoint whose header holds no plan (not written by train, package or import-nnunet) used to end predict
    with a KeyError traceback."""
    header, state, _ = load_checkpoint(tiny / "good.safetensors")
    del header["plan"]
    model = tmp_path / "no_plan.safetensors"
    model.write_bytes(weights_only_bytes(header, state))
    assert main(["predict", str(tiny / "ct.nrrd"), "--model", str(model), "--out", str(tmp_path / "out"),
                 "--progress", "none"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and f"{model} holds weights but no plan" in error, error
