"""Dice + CE and nnU-Net's deep-supervision weighting."""

import pytest
import torch

from diffumamba.nets import build_network, isotropic_3d
from diffumamba.training.losses import DeepSupervisionLoss, DiceCELoss, deep_supervision_weights


def test_weights_follow_nnunet():
    assert deep_supervision_weights(1) == [1.0]
    w = deep_supervision_weights(5)
    assert w == pytest.approx([1 / 1.875, 0.5 / 1.875, 0.25 / 1.875, 0.125 / 1.875, 0.0])
    assert sum(w) == pytest.approx(1.0)


def test_dice_ce_is_near_zero_for_a_confident_correct_prediction_and_large_for_a_wrong_one():
    target = torch.zeros(2, 1, 8, 8, 8, dtype=torch.long)
    target[:, :, 2:6, 2:6, 2:6] = 1
    onehot = torch.cat([1 - target, target], dim=1).float()
    loss = DiceCELoss()
    assert loss(onehot * 40 - 20, target).item() < 1e-3
    assert loss(20 - onehot * 40, target).item() > 10


def test_dice_term_on_hand_computed_overlap():
    target = torch.zeros(1, 1, 10, dtype=torch.long)
    target[..., :4] = 1
    logits = torch.full((1, 2, 10), -50.0)
    logits[:, 0] = 50.0
    logits[:, 1, :2], logits[:, 0, :2] = 50.0, -50.0               # predicts 2 of the 4 foreground voxels
    dice_only = DiceCELoss(ce_weight=0.0)
    assert dice_only(logits, target).item() == pytest.approx(1 - 2 * 2 / (2 + 4), abs=1e-4)


def test_deep_supervision_downsamples_targets_and_skips_the_lowest_level():
    model = build_network(isotropic_3d("diffumamba", n_stages=4, base_features=4, max_features=8))
    outputs = model(torch.randn(1, 1, 16, 16, 16))
    target = (torch.rand(1, 1, 16, 16, 16) > 0.7).long()
    criterion = DeepSupervisionLoss(DiceCELoss(), deep_supervision_weights(len(outputs)))
    loss = criterion(outputs, target)
    expected = sum(w * DiceCELoss()(o, torch.nn.functional.interpolate(target.float(), size=o.shape[2:]).long())
                   for w, o in zip(criterion.weights, outputs) if w)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert model.decoder.seg_layers[0].weight.grad is None               # deepest head (lowest resolution)
    assert model.decoder.seg_layers[-1].weight.grad.abs().sum() > 0       # full-resolution head


def test_output_count_mismatch_is_an_error():
    with pytest.raises(ValueError, match="3 outputs but 2"):
        DeepSupervisionLoss(DiceCELoss(), [0.5, 0.5])([torch.zeros(1, 2, 4)] * 3, torch.zeros(1, 4).long())
