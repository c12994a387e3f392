"""A Mamba over the voxels of a feature map, as in UMambaBot's bottleneck."""

from __future__ import annotations

import torch
from torch import nn

from .mamba import Mamba

__all__ = ["MambaLayer"]


class MambaLayer(nn.Module):
    """Flatten (B, C, *spatial) to raster-ordered tokens (last axis fastest), LayerNorm over channels,
    Mamba, and reshape back. No residual connection, a single scan direction, and always fp32 (autocast
    off): the selective scan's exponentials are not safe in half precision. All as in the official code.
    """

    def __init__(self, dim: int, d_state: int = 16, d_conv: int = 4, expand: int = 2):
        super().__init__()
        self.dim = dim
        self.norm = nn.LayerNorm(dim)
        self.mamba = Mamba(d_model=dim, d_state=d_state, d_conv=d_conv, expand=expand)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.dim:
            raise ValueError(f"MambaLayer expects {self.dim} channels, got {x.shape[1]}")
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float()
            tokens = x.flatten(2).transpose(1, 2)
            out = self.mamba(self.norm(tokens))
            return out.transpose(1, 2).reshape(x.shape)
