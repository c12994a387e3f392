"""``import-nnunet``: official Diff-UMamba / U-Mamba Bot nnU-Net checkpoints become our model packages and compute the
same outputs and gradients (issue 16). The official networks are assembled in ``nnunet_official`` from nnU-Net's own
blocks; nothing of our network code is used to build them."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

import nnunetv2  # noqa: E402,F401  (a test dependency: pip install ./Training[test])

from diffumamba.cli import main  # noqa: E402
from diffumamba.inference.models import load_ensemble  # noqa: E402
from diffumamba.nnunet_import.keys import map_official_state_dict  # noqa: E402
from nnunet_official import (nnunet_checkpoint, official_from_plans, old_format_plans)  # noqa: E402

TRAINER = {"umambabot": "nnUNetTrainerUMambaBot", "diffumamba": "nnUNetTrainerDiffUMamba",
           "diffumamba-v1": "nnUNetTrainerDiffUMamba"}
DATASET_JSON = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "GTV": 1}, "numTraining": 5,
                "file_ending": ".nii.gz", "name": "LungImport"}


@pytest.fixture(scope="module")
def lung2(shared_data):
    """The real lung2 CT (pyradiomics, 48 ml tumour): HU array, spacing (z, y, x), its CT intensity statistics."""
    image = sitk.ReadImage(str(shared_data / "pyradiomics_lung_ct" / "lung2_image.nrrd"))
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(shared_data / "pyradiomics_lung_ct" / "lung2_label.nrrd")))
    hu = sitk.GetArrayFromImage(image).astype(np.float32)
    tumour = hu[label > 0]
    stats = {"mean": float(tumour.mean()), "std": float(tumour.std()), "median": float(np.median(tumour)),
             "min": float(tumour.min()), "max": float(tumour.max()),
             "percentile_00_5": float(np.percentile(tumour, 0.5)), "percentile_99_5": float(np.percentile(tumour, 99.5))}
    return image, hu, label, stats


def real_patch(lung2, shape=(16, 64, 64)):
    """A CT-normalised patch of lung2 centred on the tumour (1 x 1 x 16 x 64 x 64)."""
    _, hu, label, stats = lung2
    centre = np.argwhere(label > 0).mean(0).astype(int)
    box = tuple(slice(c - s // 2, c - s // 2 + s) for c, s in zip(centre, shape))
    patch = (np.clip(hu[box], stats["percentile_00_5"], stats["percentile_99_5"]) - stats["mean"]) / stats["std"]
    return torch.from_numpy(patch.astype(np.float32))[None, None]


def results_folder(root, variant, plans, network, folds=(0,)):
    folder = root / "Dataset777_LungImport" / f"{TRAINER[variant]}__nnUNetPlans__3d_fullres"
    folder.mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps(DATASET_JSON))
    for fold in folds:
        (folder / f"fold_{fold}").mkdir()
        torch.save(nnunet_checkpoint(network, TRAINER[variant], plans, DATASET_JSON, fold=fold),
                   folder / f"fold_{fold}" / "checkpoint_final.pth")
    return folder


def trained_looking(network, seed=0):
    """He init leaves norms at 1/0 and lambdas at 0.5; give every tensor a value of its own so a swapped or
    misplaced tensor changes the output (the tied lambdas of the first version stay tied)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in network.named_parameters():
            if name.startswith("lambda_"):
                parameter.fill_(0.73)
            elif name.endswith(("norm1.weight", "norm2.weight", "norm.weight")) or name == "lambdas":
                parameter.copy_(0.6 + 0.8 * torch.rand(parameter.shape, generator=generator))
            elif name.endswith(("norm1.bias", "norm2.bias", "norm.bias")):
                parameter.copy_(0.2 * torch.randn(parameter.shape, generator=generator))
    return network


@pytest.mark.parametrize("variant", ["diffumamba", "diffumamba-v1", "umambabot"])
def test_imported_official_network_computes_the_same_outputs_and_gradients(tmp_path, lung2, variant, capsys):
    torch.manual_seed(0)
    plans = old_format_plans(lung2[3])
    official = trained_looking(official_from_plans(variant, plans, DATASET_JSON))
    folder = results_folder(tmp_path, variant, plans, official)
    package = tmp_path / "model.zip"
    assert main(["import-nnunet", str(folder), "--out", str(package)]) == 0
    printed = capsys.readouterr().out
    assert "read back and verified" in printed
    assert ("tied" in printed) == (variant == "diffumamba-v1")
    ensemble = load_ensemble([package], "cpu")
    ours = ensemble.networks[0]
    assert type(ours).__name__ == {"umambabot": "UMambaBot"}.get(variant, "DiffUMamba")
    assert ensemble.plan["target_spacing"] == [3.0, 1.5, 1.5] and ensemble.plan["patch_size"] == [16, 64, 64]

    x = real_patch(lung2)
    official.train(), ours.train()                                  # deep supervision: every level's logits
    theirs_out, our_out = official(x.clone().requires_grad_()), ours(x.clone().requires_grad_())
    assert len(theirs_out) == len(our_out) == 5
    scale = max(1.0, float(theirs_out[0].abs().max()))
    assert scale > 1.0                                               # real logits, not a network near zero
    for a, b in zip(theirs_out, our_out):
        assert a.shape == b.shape
        assert float((a - b).abs().max()) <= 1e-5 * scale
    print(f"{variant}: logits up to {scale:.3g}, largest difference "
          f"{max(float((a - b).abs().max()) for a, b in zip(theirs_out, our_out)):.2g}")

    weights = [torch.randn(o.shape, generator=torch.Generator().manual_seed(i)) for i, o in enumerate(our_out)]
    sum((o * w).sum() for o, w in zip(theirs_out, weights)).backward()
    sum((o * w).sum() for o, w in zip(our_out, weights)).backward()
    official_grads = map_official_state_dict({n: p.grad for n, p in official.named_parameters()
                                              if p.grad is not None and not n.startswith("lambda_")}).state
    our_grads = {n: p.grad for n, p in ours.named_parameters()}
    assert set(official_grads) <= set(our_grads)
    # One scale for all: the biases in front of an InstanceNorm have a true gradient of 0 (the norm removes them),
    # so theirs is pure rounding noise, about 1e-6 of the largest gradient, and no per-tensor ratio is meaningful.
    largest = max(float(g.abs().max()) for g in official_grads.values())
    worst = max(float((g - our_grads[n]).abs().max()) / largest for n, g in official_grads.items())
    print(f"{variant}: largest gradient {largest:.3g}, largest difference {worst:.2g} of it")
    assert worst <= 1e-5
    if variant == "diffumamba-v1":
        lambda_grads = torch.stack([getattr(official, f"lambda_{i}").grad for i in range(1, 6)])
        torch.testing.assert_close(our_grads["nrm.lambdas"], lambda_grads, rtol=1e-4, atol=1e-4)

    official.eval(), ours.eval()
    with torch.no_grad():
        full = official(x)[0]
        assert float((full - ours(x)).abs().max()) <= 1e-5 * max(1.0, float(full.abs().max()))


def test_several_folds_become_one_package_that_predict_runs_on_a_real_ct(tmp_path, lung2):
    torch.manual_seed(1)
    plans = old_format_plans(lung2[3])
    official = trained_looking(official_from_plans("umambabot", plans, DATASET_JSON))
    folder = results_folder(tmp_path, "umambabot", plans, official, folds=(0, 1))
    package = tmp_path / "umambabot.zip"
    assert main(["import-nnunet", str(folder), "--out", str(package)]) == 0
    assert len(load_ensemble([package], "cpu").networks) == 2
    image, hu, label, _ = lung2
    z = int(np.argwhere(label > 0)[:, 0].mean())
    small = sitk.RegionOfInterest(image, [512, 512, 12], [0, 0, z - 6])     # 12 slices through the tumour
    sitk.WriteImage(small, str(tmp_path / "lung2_0000.nii.gz"))
    assert main(["predict", str(tmp_path / "lung2_0000.nii.gz"), "--model", str(package), "--out",
                 str(tmp_path / "pred"), "--progress", "none"]) == 0
    written = sitk.ReadImage(str(tmp_path / "pred" / "lung2.nii.gz"))
    assert written.GetSize() == small.GetSize()
    assert written.GetOrigin() == pytest.approx(small.GetOrigin(), abs=1e-4)


def test_unknown_trainers_topologies_and_damaged_folders_are_refused_by_name(tmp_path, lung2, capsys):
    torch.manual_seed(2)
    plans = old_format_plans(lung2[3])
    official = official_from_plans("diffumamba", plans, DATASET_JSON)
    folder = results_folder(tmp_path / "a", "diffumamba", plans, official)

    def refused(expected, *extra):
        assert main(["import-nnunet", str(folder), "--out", str(tmp_path / "x.zip"), *extra]) == 2
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and expected in error, error
        assert not (tmp_path / "x.zip").exists()

    checkpoint = torch.load(folder / "fold_0" / "checkpoint_final.pth", weights_only=False)
    checkpoint["trainer_name"] = "nnUNetTrainerUMambaEnc"
    torch.save(checkpoint, folder / "fold_0" / "checkpoint_final.pth")
    refused("trained by nnUNetTrainerUMambaEnc")

    checkpoint["trainer_name"] = "nnUNetTrainerDiffUMamba"
    torch.save(checkpoint, folder / "fold_0" / "checkpoint_final.pth")
    changed = json.loads(json.dumps(plans))
    changed["configurations"]["3d_fullres"]["n_conv_per_stage_encoder"] = [3] * 6   # not what was trained
    (folder / "plans.json").write_text(json.dumps(changed))
    refused("was trained with other plans than")                  # the fold's own plans (init_args) say so
    checkpoint["init_args"]["plans"] = changed                        # they agree, and the weights do not fit
    torch.save(checkpoint, folder / "fold_0" / "checkpoint_final.pth")
    refused("tensors our network has and the checkpoint lacks (")
    checkpoint["init_args"]["plans"] = plans
    torch.save(checkpoint, folder / "fold_0" / "checkpoint_final.pth")

    changed = json.loads(json.dumps(plans))
    changed["transpose_forward"] = [2, 0, 1]
    (folder / "plans.json").write_text(json.dumps(changed))
    refused("transpose_forward [2, 0, 1]")

    (folder / "plans.json").write_text(json.dumps(plans))
    refused("checkpoint_best.pth: no such checkpoint", "--checkpoint", "best")
    (folder / "plans.json").unlink()
    refused("no plans.json")


ABSURD = [("patch_size", [4096, 4096, 4096]), ("patch_size", [0, 0, 0]), ("patch_size", [-16, 64, 64]),
          ("patch_size", "big"), ("spacing", [0, 0, 0]), ("spacing", [0.001] * 3), ("batch_size", 0)]


def test_absurd_plans_are_refused_before_a_package_is_written(tmp_path, lung2, capsys):
    """Issue 28 (D8, D9, D15): these plans were imported with exit 0 (predict then crashed, or ran with a 0-voxel
    patch and segmented wrongly); "big" failed as int('b'), naming neither file nor field."""
    plans = old_format_plans(lung2[3])
    folder = results_folder(tmp_path, "umambabot", plans, official_from_plans("umambabot", plans, DATASET_JSON))
    package = tmp_path / "x.zip"

    def refused(changed, *expected):
        (folder / "plans.json").write_text(json.dumps(changed))
        assert main(["import-nnunet", str(folder), "--out", str(package)]) == 2
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and f"{folder / 'plans.json'}: " in error, error
        assert all(text in error for text in expected), error
        assert not package.exists() and not list(tmp_path.glob("*.zip*"))

    for field, value in ABSURD:
        changed = json.loads(json.dumps(plans))
        changed["configurations"]["3d_fullres"][field] = value
        refused(changed, f"configurations.3d_fullres.{field} {value!r}")
    changed = json.loads(json.dumps(plans))
    changed["configurations"]["3d_fullres"]["patch_size"] = [18, 64, 64]
    refused(changed, "patch_size [18, 64, 64] is not a multiple of the network's total stride [4, 32, 32]")
    changed = json.loads(json.dumps(plans))
    changed["foreground_intensity_properties_per_channel"]["0"]["std"] = float("nan")
    refused(changed, "intensities[0] of CT channel 0 need finite")


def test_a_fold_trained_with_other_plans_is_refused(tmp_path, lung2, capsys):
    """The plans in a fold's own checkpoint (nnU-Net's init_args) that differ from the folder's plans.json in what
    the model sees were ignored: the fold was imported under plans.json (issue 28, D9)."""
    plans = old_format_plans(lung2[3])
    folder = results_folder(tmp_path, "umambabot", plans, official_from_plans("umambabot", plans, DATASET_JSON),
                            folds=(0, 1))
    path = folder / "fold_1" / "checkpoint_final.pth"
    checkpoint = torch.load(path, weights_only=False)
    own = json.loads(json.dumps(plans))
    own["configurations"]["3d_fullres"]["spacing"] = [2.0, 1.5, 1.5]
    own["foreground_intensity_properties_per_channel"]["0"]["mean"] += 10
    checkpoint["init_args"]["plans"] = own
    torch.save(checkpoint, path)
    package = tmp_path / "x.zip"
    assert main(["import-nnunet", str(folder), "--out", str(package)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and error.startswith(f"diffumamba import-nnunet: error: {path}: "), error
    assert "spacing [2.0, 1.5, 1.5] in the checkpoint vs [3.0, 1.5, 1.5]" in error, error
    assert "foreground_intensity_properties_per_channel (channel 0 mean " in error and not package.exists()

    # What does not reach the model may differ: batch size, another configuration.
    own = json.loads(json.dumps(plans))
    own["configurations"]["3d_fullres"]["batch_size"] = 7
    own["configurations"]["3d_lowres"] = {**own["configurations"]["3d_fullres"], "spacing": [4.0, 3.0, 3.0]}
    checkpoint["init_args"]["plans"] = own
    torch.save(checkpoint, path)
    assert main(["import-nnunet", str(folder), "--out", str(package)]) == 0


def test_duplicate_keys_must_agree_with_the_named_tensors(lung2):
    plans = old_format_plans(lung2[3])
    state = dict(official_from_plans("umambabot", plans, DATASET_JSON).state_dict())
    mapped = map_official_state_dict(state)
    assert not any(".all_modules." in k or k.startswith("decoder.encoder.") or ".conv3." in k for k in mapped.state)
    state["decoder.encoder.stages.0.0.conv1.weight"] = state["encoder.stages.0.0.conv1.weight"] + 1
    with pytest.raises(ValueError, match="differs from the encoder's own tensor"):
        map_official_state_dict(state)


def test_imported_plan_preprocesses_a_real_ct_as_nnunet_does(shared_data, lung2):
    """nnU-Net's own DefaultPreprocessor against ours with the imported plan, on lung2 (5 mm slices to 3 mm: the
    slice axis is resampled, where nnU-Net uses nearest neighbour). Values are z-scores (range about -5 to 1)."""
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from diffumamba.data.preprocessing import preprocess_case
    from diffumamba.nnunet_import.plans import plan_from_nnunet

    image, hu, label, stats = lung2
    plans = old_format_plans(stats, spacing=(3.0, 1.5, 1.5))
    manager = PlansManager(plans)
    folder = shared_data / "pyradiomics_lung_ct"
    theirs, their_label, _ = DefaultPreprocessor(verbose=False).run_case(
        [str(folder / "lung2_image.nrrd")], str(folder / "lung2_label.nrrd"), manager,
        manager.get_configuration("3d_fullres"), DATASET_JSON)
    plan = plan_from_nnunet(plans, DATASET_JSON, "3d_fullres", "diffumamba")
    assert plan.separate_z_order == 0 and plan.channel_names == ["CT"]
    spacing = tuple(reversed(image.GetSpacing()))

    def ours(separate_z_order):
        return preprocess_case(hu[None], label.astype(np.int16), spacing, plan.target_spacing, plan.channel_names,
                               plan.intensities, plan.image_order, separate_z_order=separate_z_order)

    data, our_label, _ = ours(plan.separate_z_order)
    assert data.shape == theirs.shape == (1, 102, 214, 214)
    difference = np.abs(data - theirs)
    # measured: mean 0.0015, 99th percentile 0.038 (skimage's cubic resize vs ITK's B-spline within slices)
    assert difference.mean() < 0.005 and np.percentile(difference, 99) < 0.1
    assert np.corrcoef(data.ravel(), theirs.ravel())[0, 1] > 0.9999
    assert (our_label == their_label[0]).mean() > 0.999
    spline_everywhere = np.abs(ours(None)[0] - theirs).mean()          # our own models' resampling: 0.07
    assert spline_everywhere > 10 * difference.mean()
