"""Gaussian-weighted sliding-window logits over a whole volume (MONAI's ``sliding_window_inference``)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["sliding_window_logits"]


@torch.no_grad()
def sliding_window_logits(network: nn.Module, data: np.ndarray, patch_size: Sequence[int], overlap: float = 0.5,
                          device: str | torch.device = "cpu", batch_size: int = 2) -> torch.Tensor:
    """Logits (classes, *spatial) for ``data`` (channels, *spatial), full-resolution head only.

    Patches are blended with a Gaussian weight, as nnU-Net does, so patch borders do not show. Patches
    go through the network two at a time by default: on CPU, PyTorch runs a batch of one small 3D
    patch through its slow native convolution instead of oneDNN (its heuristic looks at N*C*D*H only),
    which made a 20 x 64 x 64 sliding window 4.7x slower with batch 1 than with batch 2.
    """
    from monai.inferers import sliding_window_inference

    was_training = network.training
    network.eval()            # eval mode: one full-resolution output, whatever the config's deep supervision
    try:
        image = torch.from_numpy(np.ascontiguousarray(data))[None].float().to(device)
        logits = sliding_window_inference(image, list(patch_size), batch_size, network, overlap=overlap, mode="gaussian")
    finally:
        network.train(was_training)
    return torch.as_tensor(logits)[0].cpu()
