"""Residual decoder of UMambaBot / Diff-UMamba with a segmentation head at every level."""

from __future__ import annotations

import torch
from torch import nn

from .blocks import UpsampleLayer, conv_class, residual_stage
from .config import NetworkConfig
from .encoder import _block_kwargs

__all__ = ["ResidualDecoder"]


class ResidualDecoder(nn.Module):
    """Upsample (nearest + 1x1 conv), concatenate the skip, residual stage, 1x1 head; deepest level first.

    Every level has a head (so deep-supervision checkpoints and plain ones share parameter names);
    with ``deep_supervision`` (the config's, and the network's training mode) the logits of all levels are
    returned, full resolution first, otherwise only the full-resolution logits.
    """

    def __init__(self, config: NetworkConfig):
        super().__init__()
        dims, features, block_kwargs = config.spatial_dims, config.features_per_stage, _block_kwargs(config)
        self.deep_supervision = config.deep_supervision
        upsample, stages, heads = [], [], []
        for s in range(1, config.n_stages):
            below, skip = features[-s], features[-(s + 1)]
            upsample.append(UpsampleLayer(dims, below, skip, config.strides[-s]))
            stages.append(residual_stage(dims, 2 * skip, skip, config.kernel_sizes[-(s + 1)], [1] * dims,
                                         config.n_blocks_per_stage_decoder[s - 1], **block_kwargs))
            heads.append(conv_class(dims)(skip, config.num_classes, kernel_size=1, bias=True))
        self.upsample_layers = nn.ModuleList(upsample)
        self.stages = nn.ModuleList(stages)
        self.seg_layers = nn.ModuleList(heads)

    def forward(self, skips: list[torch.Tensor], deep_supervision: bool = True):
        """``deep_supervision``: the caller's switch (the network passes ``self.training``); the logits of every
        level are returned only when the config asks for deep supervision too."""
        deep = self.deep_supervision and deep_supervision
        x = skips[-1]
        logits = []
        last = len(self.stages) - 1
        for s, (up, stage, head) in enumerate(zip(self.upsample_layers, self.stages, self.seg_layers)):
            x = stage(torch.cat((up(x), skips[-(s + 2)]), dim=1))
            if deep or s == last:
                logits.append(head(x))
        logits.reverse()
        return logits if deep else logits[0]
