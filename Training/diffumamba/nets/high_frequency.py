"""High-frequency Mamba module (Diff-CL's CNN branch): gate features by a global scan of their high-pass part.

Diff-CL's abstract states a high-frequency Mamba module that captures boundary and detail information
globally; its details are not public. Our design (docs/methods.md): the feature map's high-pass part is taken
in the frequency domain (``rfftn``, a radial mask keeping normalised frequencies above ``cutoff``, in fp32); its
local magnitude, average-pooled to at most ``max_tokens`` positions (a raster scan of every voxel of a large
feature map costs seconds on a CPU), is scanned as raster-ordered tokens by two Mambas (forward and reversed
order), turned into a sigmoid attention by a 1x1 convolution, upsampled back (trilinear) and applied as a
residual gate ``F + F * A``. The gate's convolution starts at zero, so a new module scales every feature by 1.5,
which the decoder's InstanceNorm removes: it starts as a no-op.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import conv_class
from .mamba_layer import MambaLayer

__all__ = ["HighFrequencyMamba", "high_pass"]


def high_pass(x: torch.Tensor, cutoff: float) -> torch.Tensor:
    """The part of ``x`` (B, C, *spatial) whose normalised spatial frequency (cycles per voxel x 2, so 1 is
    Nyquist on every axis) has a radius above ``cutoff``."""
    dims = tuple(range(2, x.dim()))
    spectrum = torch.fft.rfftn(x.float(), dim=dims)
    radius2 = torch.zeros(spectrum.shape[2:], device=x.device)
    for axis, n in enumerate(x.shape[2:]):
        freq = torch.fft.rfftfreq(n, device=x.device) if axis == len(dims) - 1 else torch.fft.fftfreq(n, device=x.device)
        shape = [1] * len(dims)
        shape[axis] = -1
        radius2 = radius2 + (2 * freq.view(shape)) ** 2
    mask = (radius2.sqrt() > cutoff).to(spectrum.dtype)
    return torch.fft.irfftn(spectrum * mask, s=x.shape[2:], dim=dims)


class HighFrequencyMamba(nn.Module):
    """``F + F * sigmoid(conv1x1(Mamba(hp(F)) + flip(Mamba'(flip(hp(F))))))``.

    Args:
        spatial_dims: 2 or 3.
        channels: feature channels.
        cutoff: normalised radius of the high-pass mask (0.15: keeps all but the coarsest structure).
        d_state, d_conv, expand: Mamba hyper-parameters.
    """

    def __init__(self, spatial_dims: int, channels: int, cutoff: float = 0.15, d_state: int = 16, d_conv: int = 4,
                 expand: int = 2, max_tokens: int = 512):
        super().__init__()
        self.cutoff, self.max_tokens = cutoff, max_tokens
        self.forward_scan = MambaLayer(channels, d_state, d_conv, expand)
        self.backward_scan = MambaLayer(channels, d_state, d_conv, expand)
        self.attention = conv_class(spatial_dims)(channels, channels, kernel_size=1)
        nn.init.zeros_(self.attention.weight)
        nn.init.zeros_(self.attention.bias)

    def token_grid(self, size) -> list[int]:
        """The pooled grid: the feature map's own when it has at most ``max_tokens`` voxels, else every axis
        shrunk by the same factor."""
        count = math.prod(size)
        if count <= self.max_tokens:
            return list(size)
        factor = (count / self.max_tokens) ** (1 / len(size))
        return [max(1, int(n / factor)) for n in size]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = list(x.shape[2:])
        grid = self.token_grid(size)
        detail = high_pass(x, self.cutoff).abs()
        if grid != size:
            pool = F.adaptive_avg_pool3d if x.dim() == 5 else F.adaptive_avg_pool2d
            detail = pool(detail, grid)
        dims = tuple(range(2, x.dim()))
        scanned = self.forward_scan(detail) + self.backward_scan(detail.flip(dims)).flip(dims)
        gate = self.attention(scanned.to(x.dtype))
        if grid != size:
            gate = F.interpolate(gate, size=size, mode="trilinear" if x.dim() == 5 else "bilinear", align_corners=False)
        return x + x * torch.sigmoid(gate)
