"""Predict a label map for one image with a trained checkpoint, on exactly the image's grid."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..data.preprocessing import preprocess_case, restore_to_original
from .sliding_window import sliding_window_logits

__all__ = ["predict_label_map"]


def predict_label_map(network: nn.Module, plan: dict, data: np.ndarray, spacing, overlap: float = 0.5,
                      device: str | torch.device = "cpu") -> np.ndarray:
    """Label map (z, y, x) on the input array's grid for ``data`` (channels, z, y, x) in original units.

    ``plan`` is the checkpoint's plan (target spacing, channel names, intensity statistics, patch size).
    """
    processed, _, properties = preprocess_case(data, None, spacing, plan["target_spacing"], plan["channel_names"],
                                               plan["intensities"], plan.get("image_order", 3))
    logits = sliding_window_logits(network, processed, plan["patch_size"], overlap, device)
    labels = logits.argmax(0).numpy().astype(np.int16)
    return restore_to_original(labels, properties)
