"""The official Diff-UMamba (both published versions) and U-Mamba Bot networks, assembled for the import tests.

Written for these tests from the facts of the official files (DJ-CHB/DiffUMamba-Official nnunetv2/nets/DiffUMamba.py,
bowang-lab/U-Mamba umamba/nnunetv2/nets/UMambaBot_3d.py; docs/nnunet_import.md): the module tree and attribute
names that make their state-dict keys, and the forward arithmetic. The blocks nnU-Net supplies are nnU-Net's own:
dynamic-network-architectures' ``BasicBlockD`` for every block after a stage's first, ``PlansManager`` to read
the plans, ``InitWeights_He``. Where the official code imports ``mamba_ssm.Mamba`` this uses our ``Mamba``, whose
parameters it shares name for name. Nothing here imports our networks, so the equality tests compare two
independent constructions.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from diffumamba.nets.mamba import Mamba


class OfficialMambaLayer(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim
        self.norm = nn.LayerNorm(dim)
        self.mamba = Mamba(d_model=dim, d_state=16, d_conv=4, expand=2)

    def forward(self, x):
        b, c = x.shape[:2]
        tokens = x.reshape(b, c, x.shape[2:].numel()).transpose(-1, -2)
        return self.mamba(self.norm(tokens)).transpose(-1, -2).reshape(b, c, *x.shape[2:])


class OfficialBasicResBlock(nn.Module):
    """A stage's first block: conv1/norm1/act1, conv2/norm2, a 1x1 ``conv3`` on the shortcut, act2."""

    def __init__(self, conv_op, norm_op, cin, cout, kernel, stride):
        super().__init__()
        padding = [k // 2 for k in kernel]
        self.conv1 = conv_op(cin, cout, kernel, stride=stride, padding=padding)
        self.norm1 = norm_op(cout, eps=1e-5, affine=True)
        self.act1 = nn.LeakyReLU(inplace=True)
        self.conv2 = conv_op(cout, cout, kernel, padding=padding)
        self.norm2 = norm_op(cout, eps=1e-5, affine=True)
        self.act2 = nn.LeakyReLU(inplace=True)
        self.conv3 = conv_op(cin, cout, kernel_size=1, stride=stride)

    def forward(self, x):
        y = self.norm2(self.conv2(self.act1(self.norm1(self.conv1(x)))))
        return self.act2(y + self.conv3(x))


def _stage(conv_op, norm_op, cin, cout, kernel, stride, blocks):
    from dynamic_network_architectures.building_blocks.residual import BasicBlockD

    later = [BasicBlockD(conv_op, cout, cout, kernel, 1, True, norm_op, {"eps": 1e-5, "affine": True}, None, None,
                         nn.LeakyReLU, {"inplace": True}) for _ in range(blocks - 1)]
    return nn.Sequential(OfficialBasicResBlock(conv_op, norm_op, cin, cout, kernel, stride), *later)


class OfficialEncoder(nn.Module):
    def __init__(self, conv_op, norm_op, cin, features, kernels, strides, blocks):
        super().__init__()
        self.stem = _stage(conv_op, norm_op, cin, features[0], kernels[0], 1, blocks[0])
        stages, previous = [], features[0]
        for f, k, s, n in zip(features, kernels, strides, blocks):
            stages.append(_stage(conv_op, norm_op, previous, f, k, s, n))
            previous = f
        self.stages = nn.Sequential(*stages)
        self.output_channels, self.strides, self.kernel_sizes = features, strides, kernels

    def forward(self, x):
        x, skips = self.stem(x), []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


class OfficialUpsample(nn.Module):
    def __init__(self, conv_op, cin, cout, scale):
        super().__init__()
        self.conv = conv_op(cin, cout, kernel_size=1)
        self.scale = scale

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=self.scale, mode="nearest"))


class OfficialDecoder(nn.Module):
    def __init__(self, encoder, conv_op, norm_op, num_classes, blocks, deep_supervision):
        super().__init__()
        self.encoder = encoder                              # the official decoder keeps the encoder: keys twice
        self.deep_supervision = deep_supervision
        features, stages, ups, heads = encoder.output_channels, [], [], []
        for s in range(1, len(features)):
            below, skip = features[-s], features[-(s + 1)]
            ups.append(OfficialUpsample(conv_op, below, skip, encoder.strides[-s]))
            stages.append(_stage(conv_op, norm_op, 2 * skip, skip, encoder.kernel_sizes[-(s + 1)], 1, blocks[s - 1]))
            heads.append(conv_op(skip, num_classes, 1, 1, 0, bias=True))
        self.stages, self.upsample_layers, self.seg_layers = nn.ModuleList(stages), nn.ModuleList(ups), nn.ModuleList(heads)

    def forward(self, skips):
        x, outputs = skips[-1], []
        for s, stage in enumerate(self.stages):
            x = stage(torch.cat((self.upsample_layers[s](x), skips[-(s + 2)]), 1))
            if self.deep_supervision:
                outputs.append(self.seg_layers[s](x))
            elif s == len(self.stages) - 1:
                outputs.append(self.seg_layers[-1](x))
        outputs = outputs[::-1]
        return outputs if self.deep_supervision else outputs[0]


class OfficialNetwork(nn.Module):
    """``variant``: ``umambabot``, ``diffumamba`` (newer file: proj_convs, lambdas) or ``diffumamba-v1`` (first
    published file: conv3d_1..5 and lambda_1..5 built from one tensor, so tied; six stages only)."""

    def __init__(self, variant, in_channels, num_classes, features, kernels, strides, enc_blocks, dec_blocks,
                 deep_supervision=True):
        super().__init__()
        n = len(features)
        enc_blocks, dec_blocks = list(enc_blocks), list(dec_blocks)
        for s in range(math.ceil(n / 2), n):                       # the official block-count rule
            enc_blocks[s] = 1
        for s in range(math.ceil((n - 1) / 2 + 0.5), n - 1):
            dec_blocks[s] = 1
        conv_op = nn.Conv3d if len(kernels[0]) == 3 else nn.Conv2d
        norm_op = nn.InstanceNorm3d if len(kernels[0]) == 3 else nn.InstanceNorm2d
        self.variant = variant
        self.encoder = OfficialEncoder(conv_op, norm_op, in_channels, features, kernels, strides, enc_blocks)
        if variant == "umambabot":
            self.mamba_layer = OfficialMambaLayer(features[-1])
        else:
            self.mamba_m_1 = OfficialMambaLayer(features[-1])
            self.mamba_m_2 = OfficialMambaLayer(features[-1])
        self.decoder = OfficialDecoder(self.encoder, conv_op, norm_op, num_classes, dec_blocks, deep_supervision)
        if variant == "diffumamba":
            self.proj_convs = nn.ModuleList(nn.Conv3d(features[i], features[-1], kernel_size=1) for i in range(n - 1))
            self.lambdas = nn.Parameter(torch.full((n - 1,), 0.5))
        elif variant == "diffumamba-v1":
            assert n == 6, "the first published Diff-UMamba hard-codes six stages"
            for i in range(1, 6):
                setattr(self, f"conv3d_{i}", nn.Conv3d(features[i - 1], features[-1], kernel_size=1))
            shared = torch.tensor(0.5)
            for i in range(1, 6):
                setattr(self, f"lambda_{i}", nn.Parameter(shared))   # nn.Parameter does not copy: one storage

    def forward(self, x):
        skips = self.encoder(x)
        if self.variant == "umambabot":
            skips[-1] = self.mamba_layer(skips[-1])
            return self.decoder(skips)
        if self.variant == "diffumamba":
            projections, weights = list(self.proj_convs), list(self.lambdas)
        else:
            projections = [getattr(self, f"conv3d_{i}") for i in range(1, 6)]
            weights = [getattr(self, f"lambda_{i}") for i in range(1, 6)]
        size = skips[-1].shape[2:]
        pooled = [F.adaptive_avg_pool3d(F.relu(conv(skip.detach())), size) for conv, skip in zip(projections, skips)]
        common = sum(w * e for w, e in zip(weights, pooled))
        skips[-1] = self.mamba_m_1(skips[-1]) - self.mamba_m_2(common)
        return self.decoder(skips)


def official_from_plans(variant, plans, dataset_json, configuration="3d_fullres", deep_supervision=True):
    """Build through nnU-Net's own PlansManager, as the official ``get_*_from_plans`` do, with He init."""
    from nnunetv2.utilities.network_initialization import InitWeights_He
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    manager = PlansManager(plans)
    conf = manager.get_configuration(configuration)
    arch = conf.network_arch_init_kwargs
    blocks = arch.get("n_conv_per_stage", arch.get("n_blocks_per_stage"))
    network = OfficialNetwork(variant, len(dataset_json["channel_names"]),
                              manager.get_label_manager(dataset_json).num_segmentation_heads,
                              list(arch["features_per_stage"]), [list(k) for k in arch["kernel_sizes"]],
                              [list(s) for s in arch["strides"]], blocks, arch["n_conv_per_stage_decoder"],
                              deep_supervision)
    network.apply(InitWeights_He(1e-2))
    return network


def nnunet_checkpoint(network, trainer, plans, dataset_json, configuration="3d_fullres", fold=0):
    """The dict nnU-Net v2's ``nnUNetTrainer.save_checkpoint`` writes (keys and value types)."""
    return {
        "network_weights": network.state_dict(),
        "optimizer_state": {"state": {}, "param_groups": [{"lr": 1e-2, "momentum": 0.99, "nesterov": True,
                                                           "params": []}]},
        "grad_scaler_state": None,
        "logging": {"mean_fg_dice": [np.float64(0.6)], "ema_fg_dice": [np.float64(0.6)], "train_losses": [-0.7]},
        "_best_ema": np.float64(0.6),
        "current_epoch": 1000,
        "init_args": {"plans": plans, "configuration": configuration, "fold": fold, "dataset_json": dataset_json,
                      "device": torch.device("cuda")},
        "trainer_name": trainer,
        "inference_allowed_mirroring_axes": (0, 1, 2),
    }


def old_format_plans(ct_stats, features=(8, 64), spacing=(3.0, 1.5, 1.5), patch=(16, 64, 64)):
    """nnU-Net 2.1-2.3 plans (the layout of the official forks): six stages, anisotropic first kernels."""
    kernels = [[1, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]
    strides = [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2], [1, 2, 2]]
    return {
        "dataset_name": "Dataset777_LungImport", "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": list(spacing), "original_median_shape_after_transp": [99, 512, 512],
        "image_reader_writer": "SimpleITKIO", "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "configurations": {"3d_fullres": {
            "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
            "patch_size": list(patch), "median_image_size_in_voxels": [99, 341, 341], "spacing": list(spacing),
            "normalization_schemes": ["CTNormalization"], "use_mask_for_norm": [False],
            "UNet_class_name": "PlainConvUNet", "UNet_base_num_features": features[0],
            "n_conv_per_stage_encoder": [2] * 6, "n_conv_per_stage_decoder": [2] * 5, "num_pool_per_axis": [3, 5, 5],
            "pool_op_kernel_sizes": strides, "conv_kernel_sizes": kernels, "unet_max_num_features": features[1],
            "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
            "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
            "batch_dice": True}},
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": dict(ct_stats)},
    }
