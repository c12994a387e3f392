"""Sinusoidal timestep embedding turned into one per-channel shift per encoder stage (diffusion denoisers)."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["TimestepEmbedding", "sinusoidal_embedding"]


def sinusoidal_embedding(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """(B,) integer steps -> (B, dim) sines and cosines of geometrically spaced frequencies (Transformer style)."""
    half = dim // 2
    frequencies = torch.exp(-math.log(10_000) * torch.arange(half, device=timesteps.device) / half)
    angles = timesteps.float()[:, None] * frequencies[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class TimestepEmbedding(nn.Module):
    """Embedding (``dim``) -> MLP with SiLU -> a (B, C_s) shift for every stage, as GenericSSL's DiffVNet adds a
    time embedding to its blocks' features. The output layers start at zero, so a new denoiser starts as its
    unconditioned network."""

    def __init__(self, features_per_stage: list[int], dim: int = 128, hidden: int = 256):
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.shifts = nn.ModuleList(nn.Linear(hidden, f) for f in features_per_stage)
        for layer in self.shifts:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, timesteps: torch.Tensor) -> list[torch.Tensor]:
        hidden = self.mlp(sinusoidal_embedding(timesteps, self.dim))
        return [layer(hidden) for layer in self.shifts]
