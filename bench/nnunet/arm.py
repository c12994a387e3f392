"""The nnU-Net v2 arm of ``bench/versus_nnunet.py``: matched plans, training, prediction.

nnU-Net plans and preprocesses the raw dataset itself (its own fingerprint, CT normalisation, resampling);
only what an equal budget needs is overwritten in its 3d_fullres configuration, taken from our plan of the
same dataset: target spacing, patch size, batch size and the network's size and topology (stages, features,
kernels, strides, residual blocks per encoder stage). The network class is nnU-Net's own
``ResidualEncoderUNet`` (nnU-Net ResEnc): our encoder is the same residual encoder; nnU-Net's decoder is a
plain-convolution decoder, so it gets two convolutions per residual block of ours (the same number of
convolutions; parameter counts are printed in the table).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

from measure import run_measured

PLANS = "nnUNetPlans_matched"
TRAINER = "nnUNetTrainerBudget"
CONFIGURATION = "3d_fullres"


def environment(work: Path, results: Path | None = None) -> dict:
    """nnU-Net's three folders, one background augmentation worker on a 2-core machine, no torch.compile."""
    env = dict(os.environ)
    env.update(nnUNet_raw=str(work / "nnunet" / "raw"), nnUNet_preprocessed=str(work / "nnunet" / "preprocessed"),
               nnUNet_results=str(results or work / "nnunet" / "results"),
               nnUNet_n_proc_DA=env.get("nnUNet_n_proc_DA", "1"), nnUNet_compile="f")
    return env


def install_trainer() -> Path:
    """Copy the budget trainer where nnU-Net looks for trainer classes (its own package).

    At the top of ``nnUNetTrainer/``: nnU-Net searches the modules there before it imports its subpackages, and
    one of those (``primus``) imports timm and torchvision, which fails where torchvision's wheel does not match a
    CPU build of torch ("operator torchvision::nms does not exist")."""
    import nnunetv2

    target = Path(nnunetv2.__path__[0]) / "training" / "nnUNetTrainer" / f"{TRAINER}.py"
    shutil.copyfile(Path(__file__).with_name(f"{TRAINER}.py"), target)
    return target


def matched_plans(nnunet_plans: dict, our_plan: dict) -> dict:
    """nnU-Net's plans with the 3d_fullres configuration set to our plan's spacing, patch, batch and network."""
    net = our_plan["network"]
    n_stages = len(net["strides"])
    plans = copy.deepcopy(nnunet_plans)
    plans["plans_name"] = PLANS
    conf = plans["configurations"][CONFIGURATION]
    conf.update(data_identifier=f"{PLANS}_{CONFIGURATION}", spacing=list(our_plan["target_spacing"]),
                patch_size=list(our_plan["patch_size"]), batch_size=int(our_plan["batch_size"]),
                median_image_size_in_voxels=list(our_plan["median_shape"]))
    conf["architecture"] = {
        "network_class_name": "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
        "arch_kwargs": {
            "n_stages": n_stages, "features_per_stage": list(net["features_per_stage"]),
            "conv_op": "torch.nn.modules.conv.Conv3d", "kernel_sizes": net["kernel_sizes"], "strides": net["strides"],
            "n_blocks_per_stage": list(net["n_blocks_per_stage"]),
            "n_conv_per_stage_decoder": [2 * b for b in net["n_blocks_per_stage_decoder"]],
            "conv_bias": True, "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}},
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }
    plans["configurations"] = {CONFIGURATION: conf}
    return plans


def prepare(work: Path, dataset: Path, our_plan: dict, splits: list[dict], log) -> str:
    """Link the raw dataset, let nnU-Net fingerprint and plan it, write the matched plans and the splits, and
    preprocess. Returns the dataset name. Idempotent: finished steps are skipped."""
    env = environment(work)
    raw = work / "nnunet" / "raw" / dataset.name
    raw.parent.mkdir(parents=True, exist_ok=True)
    if not raw.exists():
        raw.symlink_to(dataset.resolve())
    dataset_id = dataset.name.split("_")[0][len("Dataset"):]
    pre = work / "nnunet" / "preprocessed" / dataset.name
    if not (pre / "nnUNetPlans.json").exists():
        run_measured(["nnUNetv2_extract_fingerprint", "-d", dataset_id, "-np", "2"], env, log)
        run_measured(["nnUNetv2_plan_experiment", "-d", dataset_id], env, log)
    plans = matched_plans(json.loads((pre / "nnUNetPlans.json").read_text()), our_plan)
    (pre / f"{PLANS}.json").write_text(json.dumps(plans, indent=1))
    (pre / "splits_final.json").write_text(json.dumps(splits, indent=1))
    if not (pre / f"{PLANS}_{CONFIGURATION}").exists():
        run_measured(["nnUNetv2_preprocess", "-d", dataset_id, "-plans_name", PLANS, "-c", CONFIGURATION, "-np", "2"],
                     env, log)
    install_trainer()
    return dataset_id


def train(work: Path, dataset_id: str, fold: int, epochs: int, iterations: int, lr: float, log,
          results: Path | None = None) -> dict:
    """Train one fold; ``results``: another results folder (the timing pass), else nnU-Net's usual one."""
    env = environment(work, results)
    env.update(BUDGET_EPOCHS=str(epochs), BUDGET_ITERATIONS=str(iterations), BUDGET_LR=str(lr))
    measured = run_measured(["nnUNetv2_train", dataset_id, CONFIGURATION, str(fold), "-tr", TRAINER, "-p", PLANS,
                             "-device", "cpu"], env, log)
    folder = next(Path(env["nnUNet_results"]).glob(f"Dataset{dataset_id}_*")) / f"{TRAINER}__{PLANS}__{CONFIGURATION}"
    seconds = json.loads((folder / f"fold_{fold}" / "train_seconds.json").read_text())
    return {"train_seconds": sum(seconds["epoch_seconds"]), "iterations": epochs * iterations,
            "epoch_seconds": seconds["epoch_seconds"],
            "train_peak_mb": measured["peak_mb"], "train_wall_seconds": measured["seconds"]}


def predict(work: Path, dataset_id: str, fold: int, images: list[Path], out: Path, log,
            results: Path | None = None) -> dict:
    """Predict the held-out images of a fold (no mirroring test-time augmentation: our arms have none either)."""
    inputs = work / "nnunet" / "heldout" / f"fold{fold}"
    shutil.rmtree(inputs, ignore_errors=True)
    inputs.mkdir(parents=True)
    for image in images:
        (inputs / image.name).symlink_to(image.resolve())
    measured = run_measured(["nnUNetv2_predict", "-i", str(inputs), "-o", str(out), "-d", dataset_id, "-c",
                             CONFIGURATION, "-f", str(fold), "-tr", TRAINER, "-p", PLANS, "-chk",
                             "checkpoint_final.pth", "--disable_tta", "-device", "cpu", "-npp", "1", "-nps", "1"],
                            environment(work, results), log)
    return {"predict_seconds": measured["seconds"] / len(images), "predict_peak_mb": measured["peak_mb"]}


def parameter_count(work: Path, dataset_id: str) -> int:
    """Parameters of the matched nnU-Net network, built by nnU-Net's own code from the matched plans."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    pre = next((work / "nnunet" / "preprocessed").glob(f"Dataset{dataset_id}_*"))
    plans = json.loads((pre / f"{PLANS}.json").read_text())
    dataset = json.loads((pre / "dataset.json").read_text())
    arch = plans["configurations"][CONFIGURATION]["architecture"]
    network = get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"],
                                     len(dataset["channel_names"]), len(dataset["labels"]), deep_supervision=True)
    return sum(p.numel() for p in network.parameters())
