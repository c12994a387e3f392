"""Noise Reduction Module of Diff-UMamba: bottleneck signal minus a Mamba estimate of common-mode noise."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .blocks import conv_class
from .mamba_layer import MambaLayer
from .pooled_projection import project_relu_pool

__all__ = ["NoiseReductionModule"]


class NoiseReductionModule(nn.Module):
    """``m1(bottleneck) - m2(sum_i lambda_i * pool(relu(proj_i(skip_i.detach()))))``.

    Like the differential transformer, the second branch models what all encoder levels share (the
    common-mode "noise") and subtracts it from the bottleneck. The skips are detached, so this branch
    learns its own projections, lambdas and Mamba but sends no gradient into the encoder, which learns
    only through the decoder skips and m1. Lambdas are independent per stage, unconstrained, and start
    at ``lambda_init`` (the newer official version; the older one tied them by accident).

    Args:
        spatial_dims: 2 or 3.
        skip_channels: channels of every encoder stage except the bottleneck.
        bottleneck_channels: channels of the bottleneck (the Mamba width).
        lambda_init: initial value of every lambda.
        d_state, d_conv, expand: Mamba hyper-parameters.
    """

    def __init__(self, spatial_dims: int, skip_channels: Sequence[int], bottleneck_channels: int,
                 lambda_init: float = 0.5, d_state: int = 16, d_conv: int = 4, expand: int = 2):
        super().__init__()
        conv = conv_class(spatial_dims)
        self.proj_convs = nn.ModuleList(conv(c, bottleneck_channels, kernel_size=1) for c in skip_channels)
        self.lambdas = nn.Parameter(torch.full((len(skip_channels),), float(lambda_init)))
        self.mamba_m_1 = MambaLayer(bottleneck_channels, d_state, d_conv, expand)
        self.mamba_m_2 = MambaLayer(bottleneck_channels, d_state, d_conv, expand)

    def common_mode(self, skips: Sequence[torch.Tensor]) -> torch.Tensor:
        """The lambda-weighted sum of projected, pooled, detached encoder skips (input of m2).

        ``project_relu_pool`` computes pool(relu(proj(skip.detach()))) slab by slab, so the 320-channel
        full-resolution projection is never held in memory.
        """
        size = skips[-1].shape[2:]
        total = 0
        for weight, proj, skip in zip(self.lambdas, self.proj_convs, skips[:-1]):
            total = total + weight * project_relu_pool(skip, proj.weight, proj.bias, size)
        return total

    def forward(self, skips: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.mamba_m_1(skips[-1]) - self.mamba_m_2(self.common_mode(skips))
