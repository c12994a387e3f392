"""High-frequency Mamba module (Diff-CL's CNN branch): gate features by a global scan of their high-pass part.

Diff-CL's abstract states a high-frequency Mamba module that captures boundary and detail information
globally; its details are not public. Our design (docs/methods.md): the feature map's high-pass part is the map
minus its Gaussian blur (sigma in voxels of the map, edges replicated; in fp32). This keeps its meaning on the small
maps the module sits on (5 x 12 x 10 for the default lung plan), where a frequency-domain cutoff cannot: a radial
FFT mask at 0.15 of Nyquist removed only the mean there. Its local magnitude, average-pooled to at most
``max_tokens`` positions (a raster scan of every voxel of a large feature map costs seconds on a CPU), is scanned
as raster-ordered tokens by two Mambas (forward and reversed order), turned into a sigmoid attention by a 1x1
convolution, upsampled back (trilinear) and applied as a residual gate ``F + F * A``. The gate's convolution starts
at zero, so a new module scales every feature by 1.5, which the decoder's InstanceNorm removes: it starts as a no-op.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import conv_class
from .mamba_layer import MambaLayer

__all__ = ["HighFrequencyMamba", "high_pass", "gaussian_blur"]


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, *spatial) along every spatial axis, ``sigma`` in voxels, kernel radius
    ceil(2 sigma), edges replicated (a constant stays exactly constant)."""
    radius = max(1, math.ceil(2 * sigma))
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    out = x.float()
    channels, dims = out.shape[1], out.dim() - 2
    conv = F.conv3d if dims == 3 else F.conv2d
    for axis in range(dims):
        shape = [1, 1] + [1] * dims
        shape[2 + axis] = kernel.numel()
        weight = kernel.view(shape).expand(channels, *shape[1:]).contiguous()
        pad = [0, 0] * dims
        pad[2 * (dims - 1 - axis)] = pad[2 * (dims - 1 - axis) + 1] = radius
        out = conv(F.pad(out, pad, mode="replicate"), weight, groups=channels)
    return out


def high_pass(x: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """``x`` minus its Gaussian blur (sigma in voxels): smooth structure (constant, ramps and shapes wider than a few
    sigma) is removed and edges, thin structures and voxel-scale texture are kept, on grids of any size."""
    return x.float() - gaussian_blur(x, sigma)


class HighFrequencyMamba(nn.Module):
    """``F + F * sigmoid(conv1x1(Mamba(hp(F)) + flip(Mamba'(flip(hp(F))))))``.

    Args:
        spatial_dims: 2 or 3.
        channels: feature channels.
        sigma: width in voxels of the Gaussian whose blur is subtracted (1: keeps detail of a voxel or two).
        d_state, d_conv, expand: Mamba hyper-parameters.
    """

    def __init__(self, spatial_dims: int, channels: int, sigma: float = 1.0, d_state: int = 16, d_conv: int = 4,
                 expand: int = 2, max_tokens: int = 512):
        super().__init__()
        self.sigma, self.max_tokens = sigma, max_tokens
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
        detail = high_pass(x, self.sigma).abs()
        if grid != size:
            pool = F.adaptive_avg_pool3d if x.dim() == 5 else F.adaptive_avg_pool2d
            detail = pool(detail, grid)
        dims = tuple(range(2, x.dim()))
        scanned = self.forward_scan(detail) + self.backward_scan(detail.flip(dims)).flip(dims)
        gate = self.attention(scanned.to(x.dtype))
        if grid != size:
            gate = F.interpolate(gate, size=size, mode="trilinear" if x.dim() == 5 else "bilinear", align_corners=False)
        return x + x * torch.sigmoid(gate)
