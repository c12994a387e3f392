"""Residual encoder of UMambaBot / Diff-UMamba: a stem, then one residual stage per resolution."""

from __future__ import annotations

from torch import nn

from .blocks import residual_stage
from .config import NetworkConfig

__all__ = ["ResidualEncoder"]


class ResidualEncoder(nn.Module):
    """Returns the output of every stage (highest resolution first; the last one is the bottleneck).

    The stem (a projecting block at full resolution plus ``n_blocks_per_stage[0] - 1`` blocks) lifts the
    input channels to ``features_per_stage[0]`` before stage 0, as in the official code.
    """

    def __init__(self, config: NetworkConfig):
        super().__init__()
        dims, block_kwargs = config.spatial_dims, _block_kwargs(config)
        features = config.features_per_stage
        self.stem = residual_stage(dims, config.in_channels, features[0], config.kernel_sizes[0], [1] * dims,
                                   config.n_blocks_per_stage[0], **block_kwargs)
        stages, in_channels = [], features[0]
        for s in range(config.n_stages):
            stages.append(residual_stage(dims, in_channels, features[s], config.kernel_sizes[s], config.strides[s],
                                         config.n_blocks_per_stage[s], **block_kwargs))
            in_channels = features[s]
        self.stages = nn.ModuleList(stages)

    def forward(self, x, stage_shifts=None):
        """``stage_shifts``: optional per-stage (B, C_s) shifts added to each stage's output (time conditioning)."""
        x = self.stem(x)
        skips = []
        for index, stage in enumerate(self.stages):
            x = stage(x)
            if stage_shifts is not None:
                x = x + stage_shifts[index].view(*stage_shifts[index].shape, *[1] * (x.dim() - 2))
            skips.append(x)
        return skips


def _block_kwargs(config: NetworkConfig) -> dict:
    return {"conv_bias": config.conv_bias, "norm_eps": config.norm_eps, "negative_slope": config.negative_slope}
