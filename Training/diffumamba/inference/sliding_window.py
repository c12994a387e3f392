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
    which made a 20 x 64 x 64 sliding window 4.7x slower with batch 1 than with batch 2. For the same reason a
    lone patch on the CPU (an image that fits one window, or the odd last window) goes through as a batch of two
    copies: a 32 x 64 x 64 click-correction box took 1.9 s alone and 0.87 s doubled.
    """
    from monai.inferers import sliding_window_inference

    was_training = network.training
    network.eval()            # eval mode: one full-resolution output, whatever the config's deep supervision
    try:
        image = torch.from_numpy(np.ascontiguousarray(data))[None].float().to(device)
        predictor = _never_alone(network) if torch.device(device).type == "cpu" else network
        logits = sliding_window_inference(image, list(patch_size), batch_size, predictor, overlap=overlap,
                                          mode="gaussian")
    finally:
        network.train(was_training)
    return torch.as_tensor(logits)[0].cpu()


def _never_alone(network: nn.Module):
    """``network`` for batches of windows, a batch of one run as two copies (oneDNN instead of the slow path)."""
    def predict(windows: torch.Tensor) -> torch.Tensor:
        if windows.shape[0] != 1:
            return network(windows)
        return network(windows.expand(2, *windows.shape[1:]).contiguous())[:1]
    return predict
