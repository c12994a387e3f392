"""Building blocks shared by every network: residual block, upsampling layer, He initialisation.

They follow the official Diff-UMamba / UMambaBot code (``BasicResBlock``, ``BasicBlockD``,
``UpsampleLayer``): conv - InstanceNorm - LeakyReLU - conv - InstanceNorm, plus a shortcut, then
LeakyReLU. One class covers both official blocks because ``BasicBlockD`` as used there (stride 1,
same channels) is ``BasicResBlock`` with an identity shortcut.
"""

from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import nn

__all__ = ["conv_class", "ResidualBlock", "residual_stage", "UpsampleLayer", "init_he", "zero_init_residual"]

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_NORM = {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}


def conv_class(spatial_dims: int) -> type[nn.Module]:
    if spatial_dims not in _CONV:
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    return _CONV[spatial_dims]


class ResidualBlock(nn.Module):
    """Two convolutions with a residual shortcut (a 1x1 convolution when ``projection`` is set).

    Args:
        spatial_dims: 2 or 3.
        in_channels, out_channels: channel counts.
        kernel_size: per-axis kernel size; padding is ``k // 2`` so stride 1 keeps the size.
        stride: per-axis stride of the first convolution and of the projection shortcut.
        projection: use a strided 1x1 convolution on the shortcut (required when shapes change).
        conv_bias: bias in the 3x3 convolutions.
        norm_eps: InstanceNorm epsilon.
        negative_slope: LeakyReLU slope.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: Sequence[int],
                 stride: Sequence[int] | int = 1, projection: bool = False, conv_bias: bool = True,
                 norm_eps: float = 1e-5, negative_slope: float = 0.01):
        super().__init__()
        conv, norm = conv_class(spatial_dims), _NORM[spatial_dims]
        padding = [k // 2 for k in kernel_size]
        if not projection and (in_channels != out_channels or any(s != 1 for s in _as_list(stride))):
            raise ValueError("a ResidualBlock that changes channels or resolution needs projection=True")
        self.conv1 = conv(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=conv_bias)
        self.norm1 = norm(out_channels, eps=norm_eps, affine=True)
        self.act1 = nn.LeakyReLU(negative_slope, inplace=True)
        self.conv2 = conv(out_channels, out_channels, kernel_size, padding=padding, bias=conv_bias)
        self.norm2 = norm(out_channels, eps=norm_eps, affine=True)
        self.act2 = nn.LeakyReLU(negative_slope, inplace=True)
        self.shortcut = conv(in_channels, out_channels, 1, stride=stride) if projection else nn.Identity()

    def forward(self, x):
        y = self.act1(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return self.act2(y + self.shortcut(x))


def residual_stage(spatial_dims: int, in_channels: int, out_channels: int, kernel_size: Sequence[int],
                   stride: Sequence[int], n_blocks: int, **block_kwargs) -> nn.Sequential:
    """A projecting block (which may downsample or change width) followed by n_blocks - 1 identity blocks."""
    if n_blocks < 1:
        raise ValueError(f"a stage needs at least one block, got {n_blocks}")
    blocks = [ResidualBlock(spatial_dims, in_channels, out_channels, kernel_size, stride, projection=True,
                            **block_kwargs)]
    blocks += [ResidualBlock(spatial_dims, out_channels, out_channels, kernel_size, 1, **block_kwargs)
               for _ in range(n_blocks - 1)]
    return nn.Sequential(*blocks)


class UpsampleLayer(nn.Module):
    """Nearest-neighbour upsampling by the stage's stride, then a 1x1 convolution to the skip's width.

    The official code uses this instead of a transposed convolution (no checkerboard artefacts).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, scale: Sequence[int]):
        super().__init__()
        self.scale = tuple(float(s) for s in scale)
        self.conv = conv_class(spatial_dims)(in_channels, out_channels, kernel_size=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=self.scale, mode="nearest"))


def init_he(module: nn.Module, neg_slope: float = 1e-2) -> None:
    """nnU-Net's ``InitWeights_He``: Kaiming-normal weights and zero bias on 2D/3D (transposed) convolutions.

    Mamba's own ``Conv1d`` and ``Linear`` layers are deliberately untouched: they keep mamba_ssm's init.
    """
    if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        nn.init.kaiming_normal_(module.weight, a=neg_slope)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


def zero_init_residual(module: nn.Module) -> None:
    """nnU-Net ResEnc's ``init_last_bn_before_add_to_0``: zero the affine weight and bias of each residual block's
    last norm, so every block starts as its shortcut and the logits of a freshly built deep network start near zero
    (cross-entropy about log(classes)) instead of growing with the number of blocks. Apply with ``module.apply``."""
    if isinstance(module, ResidualBlock):
        nn.init.zeros_(module.norm2.weight)
        nn.init.zeros_(module.norm2.bias)
