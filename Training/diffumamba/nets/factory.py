"""Build a network from its serialisable config."""

from __future__ import annotations

from torch import nn

from .config import NetworkConfig
from .diffumamba import DiffUMamba
from .resunet import ResUNet
from .umambabot import UMambaBot

__all__ = ["NETWORKS", "build_network"]

NETWORKS: dict[str, type[ResUNet]] = {"resunet": ResUNet, "umambabot": UMambaBot, "diffumamba": DiffUMamba}


def build_network(config: NetworkConfig | dict) -> nn.Module:
    """The network ``config.network`` names, freshly initialised (He init for convolutions)."""
    if isinstance(config, dict):
        config = NetworkConfig.from_dict(config)
    return NETWORKS[config.network](config)
