"""Training-time corruption of the prior channels, so a propagation model neither copies the prior nor
fails without it.

A registered prior GTV is never exactly right: registration errs by millimetres, the prior contour had its
own observer, and the tumour changed in between. Per training patch (channels: current scan ..., prior
scan, prior GTV), with probability ``drop`` both prior channels are zeroed (a prior that carries no
information, so the model learns to segment from the current scan alone where the prior is unhelpful); otherwise, with probability
``perturb``, the prior GTV is shifted by up to ``max_shift`` voxels per axis and dilated or eroded by up to
``max_radius`` voxels (max pooling of the mask and of its complement).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["perturb_prior", "shift", "dilate", "erode"]


def shift(mask: torch.Tensor, offsets) -> torch.Tensor:
    """``mask`` (1, *spatial) moved by integer ``offsets`` per axis, zero-filled (not wrapped)."""
    out = torch.zeros_like(mask)
    source, target = [slice(None)], [slice(None)]
    for offset, size in zip(offsets, mask.shape[1:]):
        offset = int(offset)
        source.append(slice(max(0, -offset), size - max(0, offset)))
        target.append(slice(max(0, offset), size - max(0, -offset)))
    out[tuple(target)] = mask[tuple(source)]
    return out


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    pool = F.max_pool3d if mask.dim() == 4 else F.max_pool2d
    return pool(mask[None], 2 * radius + 1, stride=1, padding=radius)[0]


def erode(mask: torch.Tensor, radius: int) -> torch.Tensor:
    return 1 - dilate(1 - mask, radius)


def perturb_prior(images: torch.Tensor, rng: np.random.Generator, drop: float, perturb: float,
                  max_shift: int = 3, max_radius: int = 2) -> torch.Tensor:
    """``images`` (B, C, *spatial), prior scan in channel C-2 and prior GTV in C-1; a corrupted copy."""
    out = images.clone()
    for b in range(out.shape[0]):
        if rng.random() < drop:
            out[b, -2:] = 0
            continue
        if rng.random() >= perturb:
            continue
        mask = out[b, -1:]
        mask = shift(mask, rng.integers(-max_shift, max_shift + 1, mask.dim() - 1))
        radius = int(rng.integers(-max_radius, max_radius + 1))
        if radius > 0:
            mask = dilate(mask, radius)
        elif radius < 0:
            mask = erode(mask, -radius)
        out[b, -1:] = mask
    return out
