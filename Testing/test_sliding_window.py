"""Sliding-window inference: the patch batch size changes speed, never the logits."""

import numpy as np
import torch

from diffumamba.inference.sliding_window import sliding_window_logits
from diffumamba.nets import NetworkConfig, build_network


def test_batched_patches_give_the_same_logits_as_one_at_a_time():
    torch.manual_seed(0)
    config = NetworkConfig(network="diffumamba", spatial_dims=3, in_channels=1, num_classes=2,
                           features_per_stage=[4, 8, 16], kernel_sizes=[[3, 3, 3]] * 3,
                           strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2]], n_blocks_per_stage=[1, 1, 1],
                           n_blocks_per_stage_decoder=[1, 1], patch_size=[8, 16, 16])
    network = build_network(config)
    data = np.random.default_rng(0).normal(size=(1, 13, 37, 29)).astype(np.float32)
    one = sliding_window_logits(network, data, [8, 16, 16], batch_size=1)
    three = sliding_window_logits(network, data, [8, 16, 16], batch_size=3)
    assert one.shape == (2, 13, 37, 29)
    assert torch.allclose(one, three, atol=1e-5)
    assert network.training and network.decoder.deep_supervision   # modes restored
