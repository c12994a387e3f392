"""Serialisable description of a network, so a checkpoint can rebuild its model without code changes.

A ``NetworkConfig`` holds the *effective* architecture (every stage's block count after the UMambaBot
rule has been applied), so what is stored is exactly what is built. ``from_nnunet_plans`` and the
presets apply the rule for you.
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Optional, Sequence

__all__ = ["NETWORK_NAMES", "NetworkConfig", "stage_features", "umambabot_block_counts", "from_nnunet_plans", "lung_ct_3d",
           "isotropic_3d", "default_2d"]

NETWORK_NAMES = ("resunet", "umambabot", "diffumamba")


@dataclass
class NetworkConfig:
    """Everything needed to build one of the U-Net family networks.

    Attributes:
        network: ``"resunet"`` (no Mamba), ``"umambabot"`` (one Mamba on the bottleneck) or
            ``"diffumamba"`` (Noise Reduction Module on the bottleneck).
        spatial_dims: 2 or 3.
        in_channels: image channels (e.g. 1 for CT; 3 for propagation: image, prior image, prior mask).
        num_classes: output channels including background.
        features_per_stage: channels of every encoder stage; the last one is the bottleneck.
        kernel_sizes: per stage, per axis convolution kernel size.
        strides: per stage, per axis downsampling stride (the first is normally all ones).
        n_blocks_per_stage: residual blocks per encoder stage (stem included in stage 0's count).
        n_blocks_per_stage_decoder: residual blocks per decoder stage, index 0 = deepest.
        deep_supervision: return logits of every decoder level (full resolution first).
        conv_bias: bias in the residual blocks' convolutions.
        norm_eps: InstanceNorm epsilon.
        negative_slope: LeakyReLU slope.
        d_state, d_conv, expand: Mamba hyper-parameters (mamba_ssm defaults).
        lambda_init: initial value of every NRM weight lambda (DiffUMamba only).
        patch_size: the patch the network was planned for (information for trainers and predictors).
        high_frequency_stages: encoder stages (not the bottleneck) whose output is gated by a high-frequency
            Mamba module before it reaches the decoder (Diff-CL's CNN branch; empty for every other method).
        time_conditioning: every encoder stage's output gets a per-channel shift from a timestep embedding
            (the denoiser of Diff-CL's diffusion branch; such a network takes ``forward(x, timesteps)``).
    """

    network: str
    spatial_dims: int
    in_channels: int
    num_classes: int
    features_per_stage: list[int]
    kernel_sizes: list[list[int]]
    strides: list[list[int]]
    n_blocks_per_stage: list[int]
    n_blocks_per_stage_decoder: list[int]
    deep_supervision: bool = True
    conv_bias: bool = True
    norm_eps: float = 1e-5
    negative_slope: float = 0.01
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    lambda_init: float = 0.5
    patch_size: Optional[list[int]] = None
    high_frequency_stages: list[int] = field(default_factory=list)
    time_conditioning: bool = False

    def __post_init__(self):
        self.kernel_sizes = [_per_axis(k, self.spatial_dims, "kernel_sizes") for k in self.kernel_sizes]
        self.strides = [_per_axis(s, self.spatial_dims, "strides") for s in self.strides]
        self.features_per_stage = [int(f) for f in self.features_per_stage]
        self.n_blocks_per_stage = [int(n) for n in self.n_blocks_per_stage]
        self.n_blocks_per_stage_decoder = [int(n) for n in self.n_blocks_per_stage_decoder]
        if self.patch_size is not None:
            self.patch_size = [int(p) for p in self.patch_size]
        self.high_frequency_stages = sorted({int(s) for s in self.high_frequency_stages})
        self.validate()

    @property
    def n_stages(self) -> int:
        return len(self.features_per_stage)

    def size_divisor(self) -> list[int]:
        """Per-axis product of all strides: inputs are padded to a multiple of it."""
        return [math.prod(s[axis] for s in self.strides) for axis in range(self.spatial_dims)]

    def validate(self) -> None:
        problems = []
        if self.network not in NETWORK_NAMES:
            problems.append(f"network must be one of {', '.join(NETWORK_NAMES)}, got {self.network!r}")
        if self.spatial_dims not in (2, 3):
            problems.append(f"spatial_dims must be 2 or 3, got {self.spatial_dims}")
        n = self.n_stages
        if n < 2:
            problems.append("a U-Net needs at least 2 stages")
        for name, expected in (("kernel_sizes", n), ("strides", n), ("n_blocks_per_stage", n),
                               ("n_blocks_per_stage_decoder", n - 1)):
            if len(getattr(self, name)) != expected:
                problems.append(f"{name} needs {expected} entries (one per stage), got {len(getattr(self, name))}")
        if any(k % 2 == 0 for ks in self.kernel_sizes for k in ks):
            problems.append("kernel sizes must be odd so that stride-1 convolutions keep the size")
        if any(s < 1 for ss in self.strides for s in ss) or any(c < 1 for c in self.features_per_stage):
            problems.append("strides and features must be positive")
        if any(b < 1 for b in self.n_blocks_per_stage + self.n_blocks_per_stage_decoder):
            problems.append("every stage needs at least one block")
        if self.in_channels < 1 or self.num_classes < 1:
            problems.append("in_channels and num_classes must be positive")
        if any(not 0 <= s < n - 1 for s in self.high_frequency_stages):
            problems.append(f"high_frequency_stages must be encoder stages 0..{n - 2} (not the bottleneck)")
        if self.patch_size is not None and len(self.patch_size) != self.spatial_dims:
            problems.append(f"patch_size needs {self.spatial_dims} entries")
        if problems:
            raise ValueError("invalid network config: " + "; ".join(problems))

    def replace(self, **changes: Any) -> "NetworkConfig":
        return NetworkConfig.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "NetworkConfig":
        known = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
        unknown, missing = sorted(set(data) - known), sorted(required - set(data))
        if unknown or missing:
            raise ValueError(f"invalid network config: unknown keys {unknown}, missing keys {missing}")
        try:
            return cls(**data)
        except TypeError as err:  # e.g. a string where a list of numbers belongs
            raise ValueError(f"invalid network config: {err}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "NetworkConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"invalid network config: not JSON ({err})") from None
        if not isinstance(data, dict):
            raise ValueError("invalid network config: expected a JSON object")
        return cls.from_dict(data)


def _per_axis(value: int | Sequence[int], spatial_dims: int, name: str) -> list[int]:
    values = [int(value)] * spatial_dims if isinstance(value, int) else [int(v) for v in value]
    if len(values) != spatial_dims:
        raise ValueError(f"invalid network config: every entry of {name} needs {spatial_dims} values, got {values}")
    return values


def umambabot_block_counts(n_stages: int, encoder: Sequence[int] | int = 2,
                           decoder: Sequence[int] | int = 2) -> tuple[list[int], list[int]]:
    """UMambaBot's rule (kept by Diff-UMamba): one block for the deeper half of the encoder
    (stages >= ceil(n/2)) and for the shallow decoder stages (indices ceil((n-1)/2 + 0.5) .. n-2,
    where decoder index 0 is the deepest)."""
    enc = [encoder] * n_stages if isinstance(encoder, int) else list(encoder)
    dec = [decoder] * (n_stages - 1) if isinstance(decoder, int) else list(decoder)
    for s in range(math.ceil(n_stages / 2), n_stages):
        enc[s] = 1
    for s in range(math.ceil((n_stages - 1) / 2 + 0.5), n_stages - 1):
        dec[s] = 1
    return enc, dec


def stage_features(n_stages: int, base: int = 32, maximum: int = 320) -> list[int]:
    return [min(base * 2 ** i, maximum) for i in range(n_stages)]


def from_nnunet_plans(plans: dict, configuration: str = "3d_fullres", network: str = "diffumamba",
                      in_channels: int = 1, num_classes: int = 2, deep_supervision: bool = True) -> NetworkConfig:
    """Build a config from an nnU-Net v2 ``nnUNetPlans.json`` dict, as the official trainer does."""
    try:
        conf = plans["configurations"][configuration]
        arch = conf.get("architecture", {}).get("arch_kwargs", {})
        kernels = arch.get("kernel_sizes", conf.get("conv_kernel_sizes"))
        strides = arch.get("strides", conf.get("pool_op_kernel_sizes"))
        n_stages = len(kernels)
        enc = arch.get("n_conv_per_stage", arch.get("n_blocks_per_stage", conf.get("n_conv_per_stage_encoder", 2)))
        dec = arch.get("n_conv_per_stage_decoder", conf.get("n_conv_per_stage_decoder", 2))
        features = arch.get("features_per_stage") or stage_features(
            n_stages, conf.get("UNet_base_num_features", 32), conf.get("unet_max_num_features", 320))
        patch = conf.get("patch_size")
    except (KeyError, TypeError) as err:
        raise ValueError(f"not an nnU-Net v2 plans file with configuration {configuration!r}: missing {err}") from None
    enc, dec = umambabot_block_counts(n_stages, enc, dec)
    return NetworkConfig(network=network, spatial_dims=len(kernels[0]), in_channels=in_channels,
                         num_classes=num_classes, features_per_stage=list(features), kernel_sizes=kernels,
                         strides=strides, n_blocks_per_stage=enc, n_blocks_per_stage_decoder=dec,
                         deep_supervision=deep_supervision, patch_size=patch)


def lung_ct_3d(network: str = "diffumamba", in_channels: int = 1, num_classes: int = 2) -> NetworkConfig:
    """Default 3D lung-CT network, close to nnU-Net v2's 3d_fullres plan for MSD Task06_Lung.

    Target spacing about 1.24 x 0.79 x 0.79 mm (z, y, x) and patch 80 x 192 x 160. nnU-Net's rule
    (downsample an axis while its spacing is at most twice the finest one and it keeps at least 4
    voxels; 3-wide kernels on such axes) gives 3x3x3 kernels everywhere, z downsampled four times and
    y, x five times: bottleneck 5 x 6 x 5 = 150 tokens of 320 channels.
    """
    n_stages = 6
    enc, dec = umambabot_block_counts(n_stages)
    return NetworkConfig(network=network, spatial_dims=3, in_channels=in_channels, num_classes=num_classes,
                         features_per_stage=stage_features(n_stages), kernel_sizes=[[3, 3, 3]] * n_stages,
                         strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]],
                         n_blocks_per_stage=enc, n_blocks_per_stage_decoder=dec, patch_size=[80, 192, 160])


def isotropic_3d(network: str = "diffumamba", n_stages: int = 6, in_channels: int = 1, num_classes: int = 2,
                 base_features: int = 32, max_features: int = 320,
                 patch_size: Optional[Sequence[int]] = None) -> NetworkConfig:
    """A 3D network for isotropic data: 3x3x3 kernels, stride 2 on every axis after the first stage."""
    enc, dec = umambabot_block_counts(n_stages)
    return NetworkConfig(network=network, spatial_dims=3, in_channels=in_channels, num_classes=num_classes,
                         features_per_stage=stage_features(n_stages, base_features, max_features),
                         kernel_sizes=[[3, 3, 3]] * n_stages,
                         strides=[[1, 1, 1]] + [[2, 2, 2]] * (n_stages - 1),
                         n_blocks_per_stage=enc, n_blocks_per_stage_decoder=dec,
                         patch_size=list(patch_size) if patch_size else None)


def default_2d(network: str = "diffumamba", n_stages: int = 7, in_channels: int = 1, num_classes: int = 2,
               base_features: int = 32, max_features: int = 512) -> NetworkConfig:
    """A 2D network like nnU-Net's 2d configuration for 512x512 CT slices."""
    enc, dec = umambabot_block_counts(n_stages)
    return NetworkConfig(network=network, spatial_dims=2, in_channels=in_channels, num_classes=num_classes,
                         features_per_stage=stage_features(n_stages, base_features, max_features),
                         kernel_sizes=[[3, 3]] * n_stages, strides=[[1, 1]] + [[2, 2]] * (n_stages - 1),
                         n_blocks_per_stage=enc, n_blocks_per_stage_decoder=dec)
