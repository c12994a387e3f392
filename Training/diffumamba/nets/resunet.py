"""Plain residual U-Net (no Mamba): the baseline, and the base class of UMambaBot and Diff-UMamba."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import init_he, zero_init_residual
from .config import NetworkConfig
from .decoder import ResidualDecoder
from .encoder import ResidualEncoder
from .high_frequency import HighFrequencyMamba
from .time_embedding import TimestepEmbedding

__all__ = ["ResUNet"]


class ResUNet(nn.Module):
    """Residual encoder-decoder of UMambaBot / Diff-UMamba with an identity bottleneck.

    Subclasses replace ``bottleneck``; everything else (encoder, decoder, block counts, heads, He
    init) is shared so the three networks differ only where the papers say they do.

    Inputs of any size are accepted: they are zero-padded at the far end of each axis to a multiple of
    the total stride and the logits are cropped back (level ``i`` of deep supervision has size
    ``ceil(size / stride_i)``). Sliding-window inference with a planned patch never needs the padding.

    Deep supervision (``config.deep_supervision``) applies in training mode only, as in MONAI's DynUNet:
    in eval mode the network always returns the full-resolution logits as one tensor.

    Args:
        config: the network description; ``config.network`` is not checked here so subclasses share it.
    """

    def __init__(self, config: NetworkConfig):
        super().__init__()
        self.config = config
        self.encoder = ResidualEncoder(config)
        self.build_bottleneck(config)
        self.decoder = ResidualDecoder(config)
        self.apply(init_he)
        # Built after the He init: their own initialisation (zero gate, Mamba's) is kept.
        self.high_frequency = nn.ModuleDict({
            str(s): HighFrequencyMamba(config.spatial_dims, config.features_per_stage[s], d_state=config.d_state,
                                       d_conv=config.d_conv, expand=config.expand)
            for s in config.high_frequency_stages})
        self.time_embedding = TimestepEmbedding(config.features_per_stage) if config.time_conditioning else None

    def zero_init_outputs(self) -> None:
        """Start every residual block as its shortcut (nnU-Net ResEnc's zeroed last norm) and every segmentation
        head at zero, so training starts from logits 0 (cross-entropy log(classes)). With He init alone the
        un-normalised 1x1 shortcuts of UMambaBot's blocks let activations grow block after block: on a real CT
        patch the initial logits reach 20-40 and the cross-entropy 1-14 depending on the seed (Testing/
        test_training_choices.py), which the first few hundred steps then spend undoing."""
        self.apply(zero_init_residual)
        for head in self.decoder.seg_layers:
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def build_bottleneck(self, config: NetworkConfig) -> None:
        """Create the modules of the bottleneck (none for the plain U-Net)."""

    def bottleneck(self, skips: list[torch.Tensor]) -> torch.Tensor:
        """The new bottleneck features, given every encoder stage's output."""
        return skips[-1]

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor | None = None):
        """``timesteps`` (B,): the diffusion step of each sample, required by a time-conditioned network only."""
        if (timesteps is None) == (self.time_embedding is not None):
            raise ValueError("timesteps are needed by, and only by, a network with time_conditioning")
        expected = 2 + self.config.spatial_dims
        if x.dim() != expected or x.shape[1] != self.config.in_channels:
            raise ValueError(f"{type(self).__name__} expects (batch, {self.config.in_channels}, "
                             f"{'D, H, W' if expected == 5 else 'H, W'}), got {tuple(x.shape)}")
        size = x.shape[2:]
        divisor = self.config.size_divisor()
        pad = [(-n) % d for n, d in zip(size, divisor)]
        if any(pad):
            x = F.pad(x, [p for axis_pad in reversed(pad) for p in (0, axis_pad)])
        skips = self.encoder(x, self.time_embedding(timesteps) if timesteps is not None else None)
        for stage, module in self.high_frequency.items():
            skips[int(stage)] = module(skips[int(stage)])
        skips[-1] = self.bottleneck(skips)
        logits = self.decoder(skips, deep_supervision=self.training)
        if not any(pad):
            return logits
        if isinstance(logits, torch.Tensor):
            return _crop(logits, size)
        strides, scale, cropped = self.config.strides, [1] * len(size), []
        for level, out in enumerate(logits):
            scale = [a * b for a, b in zip(scale, strides[level])]
            cropped.append(_crop(out, [math.ceil(n / s) for n, s in zip(size, scale)]))
        return cropped

    def count_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _crop(x: torch.Tensor, size) -> torch.Tensor:
    return x[(..., *[slice(0, n) for n in size])]
