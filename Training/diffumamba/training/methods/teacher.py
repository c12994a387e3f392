"""An exponential-moving-average copy of the network (mean teacher): steadier than the student, so its
probabilities judge labels (DALE) without chasing the student's step-to-step noise."""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["EmaTeacher", "FeatureTap"]


class EmaTeacher:
    """``teacher = m * teacher + (1 - m) * student`` after every step; buffers are copied."""

    def __init__(self, network: nn.Module, momentum: float = 0.99):
        self.momentum = momentum
        self.model = copy.deepcopy(network).eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)

    @torch.no_grad()
    def update(self, network: nn.Module) -> None:
        for mine, theirs in zip(self.model.parameters(), network.parameters()):
            mine.mul_(self.momentum).add_(theirs.detach(), alpha=1 - self.momentum)
        for mine, theirs in zip(self.model.buffers(), network.buffers()):
            mine.copy_(theirs)

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Softmax of the full-resolution logits."""
        outputs = self.model(images)
        logits = outputs[0] if isinstance(outputs, (list, tuple)) else outputs
        return torch.softmax(logits.float(), dim=1)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)


class FeatureTap:
    """Keeps the last decoder stage's output (the features the full-resolution head classifies) of every forward
    pass: the per-voxel representation DALE aligns and Diff-CL projects for its contrastive loss."""

    def __init__(self, network: nn.Module):
        self.features: torch.Tensor | None = None
        network.decoder.stages[-1].register_forward_hook(self._keep)

    def _keep(self, module, inputs, output) -> None:
        self.features = output
