"""Dice + cross-entropy with nnU-Net's deep-supervision weighting, as the official Diff-UMamba trainer uses.

nnU-Net weights the logits of decoder level i by 1/2^i (i = 0 is full resolution), gives the lowest
resolution weight 0, and normalises the weights to sum 1. Each level is compared with the target
downsampled to its size by nearest neighbour. The Dice term is MONAI's soft Dice over the foreground
classes (background excluded, smoothing 1e-5, as nnU-Net's ``MemoryEfficientSoftDice``), added 1:1 to
cross-entropy.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["deep_supervision_weights", "DiceCELoss", "DeepSupervisionLoss"]


def deep_supervision_weights(n_outputs: int) -> list[float]:
    """[1, 1/2, 1/4, ..., 0] normalised to sum 1 (a single output gets weight 1)."""
    if n_outputs < 1:
        raise ValueError("need at least one output")
    weights = [1 / 2 ** i for i in range(n_outputs)]
    if n_outputs > 1:
        weights[-1] = 0.0
    total = sum(weights)
    return [w / total for w in weights]


class DiceCELoss(nn.Module):
    """Soft Dice over the foreground classes plus cross-entropy, both on logits and an integer target.

    Args:
        batch_dice: pool the Dice over the whole batch (nnU-Net's ``batch_dice``) instead of per sample.
        dice_weight, ce_weight: weights of the two terms (1:1 in nnU-Net).
    """

    def __init__(self, batch_dice: bool = False, dice_weight: float = 1.0, ce_weight: float = 1.0):
        super().__init__()
        from monai.losses import DiceLoss

        self.dice = DiceLoss(include_background=False, to_onehot_y=True, softmax=True, smooth_nr=1e-5,
                             smooth_dr=1e-5, batch=batch_dice)
        self.dice_weight, self.ce_weight = dice_weight, ce_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits: (B, C, *spatial); target: (B, 1, *spatial) or (B, *spatial) integer labels."""
        if target.dim() == logits.dim() - 1:
            target = target.unsqueeze(1)
        logits = logits.float()
        ce = F.cross_entropy(logits, target[:, 0].long())
        return self.dice_weight * self.dice(logits, target) + self.ce_weight * ce


class DeepSupervisionLoss(nn.Module):
    """Weighted sum of a loss over the deep-supervision outputs (full resolution first)."""

    def __init__(self, loss: nn.Module, weights: Sequence[float]):
        super().__init__()
        self.loss, self.weights = loss, list(weights)

    def forward(self, outputs: Sequence[torch.Tensor] | torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor):
            return self.loss(outputs, target)
        if len(outputs) != len(self.weights):
            raise ValueError(f"{len(outputs)} outputs but {len(self.weights)} deep-supervision weights")
        if target.dim() == outputs[0].dim() - 1:
            target = target.unsqueeze(1)
        total = outputs[0].new_zeros((), dtype=torch.float32)
        for weight, logits in zip(self.weights, outputs):
            if weight == 0:
                continue
            level_target = target if logits.shape[2:] == target.shape[2:] else \
                F.interpolate(target.float(), size=logits.shape[2:], mode="nearest").long()
            total = total + weight * self.loss(logits, level_target)
        return total
