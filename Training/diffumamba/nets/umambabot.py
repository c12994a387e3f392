"""UMamba-Bot (Ma et al., U-Mamba): the residual U-Net with one Mamba layer on the bottleneck."""

from __future__ import annotations

import torch

from .config import NetworkConfig
from .mamba_layer import MambaLayer
from .resunet import ResUNet

__all__ = ["UMambaBot"]


class UMambaBot(ResUNet):
    """Bottleneck := MambaLayer(bottleneck) (LayerNorm + Mamba over the flattened voxels, no residual)."""

    def build_bottleneck(self, config: NetworkConfig) -> None:
        self.mamba_layer = MambaLayer(config.features_per_stage[-1], config.d_state, config.d_conv, config.expand)

    def bottleneck(self, skips: list[torch.Tensor]) -> torch.Tensor:
        return self.mamba_layer(skips[-1])
