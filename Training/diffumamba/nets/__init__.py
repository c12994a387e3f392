"""Networks of DiffUMambaSeg: the residual U-Net, UMamba-Bot and Diff-UMamba, plus the Mamba they use."""

from .config import NETWORK_NAMES, NetworkConfig, default_2d, from_nnunet_plans, isotropic_3d, lung_ct_3d
from .diffumamba import DiffUMamba
from .factory import NETWORKS, build_network
from .mamba import Mamba, cuda_kernels_available, selective_scan
from .mamba_layer import MambaLayer
from .nrm import NoiseReductionModule
from .resunet import ResUNet
from .umambabot import UMambaBot

__all__ = ["NETWORK_NAMES", "NETWORKS", "NetworkConfig", "build_network", "default_2d", "from_nnunet_plans",
           "isotropic_3d", "lung_ct_3d", "DiffUMamba", "Mamba", "MambaLayer", "NoiseReductionModule", "ResUNet",
           "UMambaBot", "cuda_kernels_available", "selective_scan"]
