"""The training choices the equal-budget comparison with nnU-Net v2 measured (docs/versus_nnunet.md), on real CT."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tumour_case

from diffumamba.commands.train import add_training_arguments, training_settings
from diffumamba.nets import NetworkConfig, build_network
from diffumamba.training.losses import DiceCELoss
from diffumamba.training.trainer import Trainer, TrainSettings

# The lung benchmark's network: 5 stages of 8-64 features, patch 24 x 64 x 64 at 4 x 2 x 2 mm.
LUNG_BENCH = dict(spatial_dims=3, in_channels=1, num_classes=2, features_per_stage=[8, 16, 32, 64, 64],
                  kernel_sizes=[[3, 3, 3]] * 5, strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2], [1, 2, 2], [1, 2, 2]],
                  n_blocks_per_stage=[2, 2, 2, 1, 1], n_blocks_per_stage_decoder=[2, 2, 2, 1], patch_size=[24, 48, 48])


@pytest.fixture(scope="module")
def tumour_patch(shared_data):
    case = tumour_case(shared_data, "lung2")
    return (torch.from_numpy(case.data[None, :, :24, :48, :48]).float(),
            torch.from_numpy(case.label[None, :24, :48, :48].astype(np.int64)))


def initial_cross_entropy(network: str, seed: int, patch, zero: bool) -> tuple[float, float]:
    torch.manual_seed(seed)
    net = build_network(NetworkConfig(network=network, **LUNG_BENCH))
    if zero:
        net.zero_init_outputs()
    net.eval()
    with torch.no_grad():
        logits = net(patch[0])
    return float(F.cross_entropy(logits, patch[1])), float(logits.abs().max())


@pytest.mark.parametrize("network", ["resunet", "diffumamba"])
def test_zero_init_starts_training_from_logits_zero_where_he_init_does_not(network, tumour_patch):
    he = [initial_cross_entropy(network, seed, tumour_patch, zero=False) for seed in range(3)]
    zero = [initial_cross_entropy(network, seed, tumour_patch, zero=True) for seed in range(3)]
    # He init alone (the official networks'): logits in the tens, cross-entropy far above log 2 for some seed.
    assert max(ce for ce, _ in he) > 2.0 and max(m for _, m in he) > 10
    # Zeroed last norms and heads: every seed starts at exactly log 2 with logits 0.
    assert all(ce == pytest.approx(math.log(2), abs=1e-6) and m == 0 for ce, m in zero)


def test_zero_init_still_learns_in_the_first_steps(tumour_patch):
    torch.manual_seed(0)
    net = build_network(NetworkConfig(network="resunet", **LUNG_BENCH))
    net.zero_init_outputs()
    net.train()
    optimiser = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.99, nesterov=True)
    loss_fn = DiceCELoss()
    losses = []
    for _ in range(8):
        optimiser.zero_grad()
        loss = loss_fn(net(tumour_patch[0])[0], tumour_patch[1])
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    blocks = [m for m in net.modules() if m.__class__.__name__ == "ResidualBlock"]
    # Gradients reach the zeroed norms through the heads after the first step, so the whole network trains.
    assert all(float(b.norm2.weight.abs().sum()) > 0 for b in blocks)
    assert losses[-1] < losses[0] - 0.1


def test_batch_dice_pools_the_batch_and_sample_dice_does_not():
    logits = torch.zeros(2, 2, 4, 4, 4)
    logits[:, 1] = 2.0                       # every voxel predicted foreground (p = 0.88)
    target = torch.zeros(2, 1, 4, 4, 4, dtype=torch.long)
    target[0, 0, :2] = 1                     # half of the first patch is foreground, the second patch is empty
    p = torch.softmax(logits, 1)[:, 1]
    g = target[:, 0].float()
    pooled = 1 - 2 * (p * g).sum() / (p.sum() + g.sum())
    per_sample = 1 - (2 * (p * g).sum((1, 2, 3)) / (p.sum((1, 2, 3)) + g.sum((1, 2, 3)))).mean()
    ce = F.cross_entropy(logits, target[:, 0])
    assert float(DiceCELoss(batch_dice=True)(logits, target)) == pytest.approx(float(pooled + ce), abs=1e-5)
    assert float(DiceCELoss(batch_dice=False)(logits, target)) == pytest.approx(float(per_sample + ce), abs=1e-5)
    assert abs(float(pooled - per_sample)) > 0.05


def test_command_line_choices_reach_the_trainer():
    import argparse

    parser = argparse.ArgumentParser()
    add_training_arguments(parser)
    parser.add_argument("--method", default="supervised")
    args = parser.parse_args(["--dice", "batch", "--residual-init", "zero", "--oversample", "0.5"])
    settings = training_settings(args, seed=0)
    assert settings.batch_dice and settings.zero_init_residual and settings.oversample_foreground == 0.5
    defaults = training_settings(parser.parse_args([]), seed=0)
    assert defaults.oversample_foreground == 0.33


def test_validate_every_zero_never_validates(tmp_path, shared_data):
    case = tumour_case(shared_data, "lung1")
    config = NetworkConfig(network="resunet", **{**LUNG_BENCH, "patch_size": [16, 48, 48]})
    settings = TrainSettings(epochs=2, iterations_per_epoch=1, initial_lr=1e-2, validate_every=0, device="cpu")
    trainer = Trainer(config, [case], [case], tmp_path, settings, meta={"labels": {"background": 0, "GTV": 1}})
    rows = trainer.fit(progress=False)
    assert all(math.isnan(r["val_dice"]) for r in rows)
    assert (tmp_path / "last.safetensors").exists() and not (tmp_path / "best.safetensors").exists()
