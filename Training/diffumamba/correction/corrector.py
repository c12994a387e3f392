"""One correction step on an image's own grid: crop the lesion's box, resample it to the model's grid, run the
network with the mask and the clicks as extra channels, and put the answer back.

Outside the box the mask is kept as it was, and the slices the user drew are kept exactly (the network's answer
never overwrites them): a correction only ever changes what the user has not fixed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional, Sequence

import numpy as np
import torch

from ..data.preprocessing import preprocess_case, resample_array, restore_to_original
from ..inference.sliding_window import sliding_window_logits
from .clicks import Click
from .network_input import correction_channels, lesion_box
from .progressive_merge import progressive_merge

__all__ = ["Corrector", "correct_on_grid", "foreground_probability", "keep_drawn", "one_window_mm"]


def foreground_probability(networks: Sequence[torch.nn.Module], inputs: np.ndarray, patch_size: Sequence[int],
                           device, overlap: float) -> np.ndarray:
    """The networks' mean softmax probability of the lesion on ``inputs`` (image and correction channels)."""
    total = None
    for network in networks:
        probability = torch.softmax(sliding_window_logits(network, inputs, patch_size, overlap, device).float(), 0)
        total = probability if total is None else total + probability
    return (1.0 - total[0] / len(networks)).numpy()


def one_window_mm(patch_size: Sequence[int], spacing: Sequence[float]) -> list[float]:
    """The smallest box worth cropping: just under one network window (two voxels of the model's grid less per
    axis, so rounding during resampling cannot tip it into a second row of windows, which would cost 8x)."""
    return [(p - 2) * s for p, s in zip(patch_size, spacing)]


def keep_drawn(mask: np.ndarray, drawn: Optional[np.ndarray]) -> np.ndarray:
    """``mask`` with the drawn slices' voxels (``drawn``: tumour, other) set exactly as drawn."""
    if drawn is not None:
        mask[drawn[0] > 0] = True
        mask[drawn[1] > 0] = False
    return mask


def correct_on_grid(networks: Sequence[torch.nn.Module], data: np.ndarray, mask: np.ndarray, clicks: Sequence[Click],
                    spacing: Sequence[float], patch_size: Sequence[int], device, drawn: Optional[np.ndarray] = None,
                    overlap: float = 0.25, margin_mm: float = 20.0) -> np.ndarray:
    """``Corrector.correct`` on data already on the model's grid (preprocessed: a training case), no resampling."""
    box = lesion_box(mask.shape, spacing, mask, clicks, drawn, margin_mm, one_window_mm(patch_size, spacing))
    start = [b.start for b in box]
    moved = [replace(c, index=tuple(i - o for i, o in zip(c.index, start))) for c in clicks]
    inputs = np.concatenate([data[(slice(None), *box)],
                             correction_channels(mask[box], moved, spacing, None if drawn is None else drawn[(slice(None), *box)])])
    out = mask.astype(bool).copy()
    out[box] = foreground_probability(networks, inputs, patch_size, device, overlap) > 0.5
    return keep_drawn(out, drawn)


@dataclass
class Corrector:
    """Corrects masks on images of any grid with one model (or the mean of several: folds).

    Args:
        networks: correction networks (in channels: the plan's image channels + mask, include, exclude).
        plan: their preprocessing plan (target spacing, normalisation, patch).
        device: where they run.
        overlap: sliding-window overlap inside the box (0.25: the box is one or two patches).
        margin_mm: context around the mask and the clicks.
        progressive: each click changes only the region it touches (``progressive_merge``: the newest click's
            connected change), not the whole box; requests with drawn slices redo the box (slice-to-volume).
        two_windows: a box larger than one training patch goes through the network as two windows of the box's
            size (halved, with the overlap, along its longest axis) instead of the training patch's overlapping
            windows: a fully convolutional network takes any size, and two windows are one CPU batch of two (the
            fast oneDNN path; a batch of one runs PyTorch's slow native 3D convolution), so a large GTV's box costs
            about its own voxels rather than eight windows (False: windows of the training patch).
    """

    networks: list
    plan: dict
    device: object = "cpu"
    overlap: float = 0.25
    margin_mm: float = 20.0
    two_windows: bool = True
    progressive: bool = True

    def window(self, shape: Sequence[int]) -> list[int]:
        """The window for a box of ``shape`` on the model's grid: the training patch, or half the box (above)."""
        patch = list(self.plan["patch_size"])
        strides = self.plan.get("network", {}).get("strides")
        if not self.two_windows or not strides or all(n <= p for n, p in zip(shape, patch)):
            return patch
        step = np.prod(np.asarray(strides), axis=0)

        def rounded(n: float, axis: int) -> int:                 # a multiple of the network's total stride
            return max(patch[axis], int(-(-math.ceil(n) // step[axis]) * step[axis]))

        size = [rounded(n, axis) for axis, n in enumerate(shape)]
        longest = int(np.argmax([n / p for n, p in zip(shape, patch)]))
        size[longest] = rounded(shape[longest] / (2 - self.overlap), longest)   # MONAI: two windows along it
        return size

    def warm_up(self) -> None:
        """One pass over a window of zeros, so the first click does not pay for the kernels' first-call set-up."""
        patch = self.plan["patch_size"]
        inputs = np.zeros((len(self.plan["channel_names"]) + 3, *patch), np.float32)
        foreground_probability(self.networks, inputs, patch, self.device, 0.0)

    def correct(self, image: np.ndarray, spacing: Sequence[float], mask: np.ndarray, clicks: Sequence[Click],
                drawn: Optional[np.ndarray] = None) -> np.ndarray:
        """The corrected mask (bool, ``mask``'s shape). ``image``: (channels, z, y, x) in original units;
        ``clicks`` on this grid (continuous z, y, x index); ``drawn``: (2, z, y, x) slices the user drew."""
        plan = self.plan
        target = plan["target_spacing"]
        box = lesion_box(mask.shape, spacing, mask, clicks, drawn, self.margin_mm,
                         one_window_mm(plan["patch_size"], target))
        processed, _, properties = preprocess_case(
            np.ascontiguousarray(image[(slice(None), *box)]), None, spacing, target, plan["channel_names"],
            plan["intensities"], plan.get("image_order", 3), separate_z_order=plan.get("separate_z_order"))
        shape = processed.shape[1:]
        crop = tuple(slice(a, b) for a, b in properties.bbox)

        def to_grid(volume: np.ndarray) -> np.ndarray:
            return resample_array(np.ascontiguousarray(volume[box][crop], np.float32), shape, order=1)

        offsets = [b.start + c.start for b, c in zip(box, crop)]
        scale = [n / c for n, c in zip(shape, properties.cropped_shape)]
        moved = [replace(c, index=tuple((i - o + 0.5) * s - 0.5 for i, o, s in zip(c.index, offsets, scale)))
                 for c in clicks]
        evidence = None if drawn is None else np.stack([to_grid(d) for d in drawn]) > 0.5
        inputs = np.concatenate([processed, correction_channels(to_grid(mask) > 0.5, moved, target, evidence)])
        probability = foreground_probability(self.networks, inputs, self.window(shape), self.device, self.overlap)
        restored = restore_to_original(probability[None], properties, is_label=False)[0]
        out = mask.astype(bool).copy()
        out[box] = restored > 0.5
        if self.progressive and drawn is None and clicks:
            out = progressive_merge(mask, out, clicks[-1], spacing)
        return keep_drawn(out, drawn)
