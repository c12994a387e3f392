"""Diff-UMamba (Jain et al., 2025): UMambaBot whose bottleneck Mamba becomes the Noise Reduction Module."""

from __future__ import annotations

import torch

from .config import NetworkConfig
from .nrm import NoiseReductionModule
from .resunet import ResUNet

__all__ = ["DiffUMamba"]


class DiffUMamba(ResUNet):
    """Bottleneck := Mamba1(bottleneck) - Mamba2(lambda-weighted sum of projected, pooled, detached skips).

    Built for limited-data tumour segmentation: the second Mamba estimates what every encoder level
    carries in common (scanner noise, texture unrelated to the lesion) and the subtraction removes it.
    """

    def build_bottleneck(self, config: NetworkConfig) -> None:
        self.nrm = NoiseReductionModule(config.spatial_dims, config.features_per_stage[:-1],
                                        config.features_per_stage[-1], config.lambda_init,
                                        config.d_state, config.d_conv, config.expand)

    def bottleneck(self, skips: list[torch.Tensor]) -> torch.Tensor:
        return self.nrm(skips)
