"""Training inputs of a correction model (``--task correction``): a starting mask, clicks, drawn slices, and the
network's own answers fed back.

Each training patch starts from one of the masks a user corrects: nothing but a click in the tumour (protocol
(c) of ``bench/correct.py``), or the reference spoilt the ways propagation and prediction spoil it (shifted,
grown or shrunk, cut by a plane, with a spurious blob). Sometimes one or two axial slices of the reference come
as drawn slices (slice-to-volume). Then, as in RITM and DeepEdit, the network answers up to ``max_iterations``
times without gradients, each answer becoming the mask and getting the simulated user's next click in its
largest error; the loss is taken on the last answer. So the network learns to correct its own mistakes, with
every earlier click still present, as in use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..correction.clicks import Click, next_click
from ..correction.corrector import keep_drawn
from ..correction.network_input import correction_channels
from .prior_augmentation import dilate, erode, shift
from .pseudo_objects import inner_click_index, pseudo_object

__all__ = ["ClickSimulation", "correction_batch"]


@dataclass
class ClickSimulation:
    """Probabilities and sizes of the simulated starting points (voxels of the training grid)."""

    max_iterations: int = 3      # network answers fed back before the loss (RITM's 3), drawn from
    min_iterations: int = 0      # [min_iterations, max_iterations]
    start_empty: float = 0.25    # start from an empty mask and one click in the tumour
    drawn_slices: float = 0.15   # give one or two reference slices as drawn
    max_shift: int = 4
    max_radius: int = 3
    cut: float = 0.3             # remove the tumour beyond a random plane
    blob: float = 0.3            # add a spurious sphere
    pseudo_objects: float = 0.0  # replace the label by a region grown from a random voxel (pseudo_objects.py)
    off_centre: bool = False     # the first click of an empty start anywhere in the tumour's inner half


def spoilt_reference(reference: np.ndarray, rng: np.random.Generator, settings: ClickSimulation) -> np.ndarray:
    """The reference with the errors of a propagated or predicted GTV."""
    mask = torch.from_numpy(reference[None].astype(np.float32))
    mask = shift(mask, rng.integers(-settings.max_shift, settings.max_shift + 1, reference.ndim))
    radius = int(rng.integers(-settings.max_radius, settings.max_radius + 1))
    mask = dilate(mask, radius) if radius > 0 else erode(mask, -radius) if radius < 0 else mask
    out = mask[0].numpy() > 0.5
    grid = np.indices(reference.shape).reshape(reference.ndim, -1).T
    inside = np.argwhere(out)
    if len(inside) and rng.random() < settings.cut:
        normal = rng.normal(size=reference.ndim)
        through = inside[rng.integers(len(inside))]
        out &= ((grid - through) @ normal <= 0).reshape(reference.shape)
    if rng.random() < settings.blob:
        centre = rng.uniform(0, reference.shape)
        radius = rng.uniform(2, 6)
        out |= (np.square(grid - centre).sum(1) <= radius ** 2).reshape(reference.shape)
    return out


def drawn_evidence(reference: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(2, *shape): one or two axial slices of the reference through the tumour, as the user would draw them."""
    drawn = np.zeros((2, *reference.shape), bool)
    slices = np.flatnonzero(reference.any(axis=tuple(range(1, reference.ndim))))
    for z in rng.choice(slices, size=min(len(slices), int(rng.integers(1, 3))), replace=False):
        drawn[0, z], drawn[1, z] = reference[z], ~reference[z]
    return drawn


@torch.no_grad()
def _answer(network: torch.nn.Module, inputs: torch.Tensor) -> np.ndarray:
    was_training = network.training
    network.eval()                          # one full-resolution output
    try:
        return network(inputs).argmax(1).cpu().numpy().astype(bool)
    finally:
        network.train(was_training)


def correction_batch(images: torch.Tensor, labels: torch.Tensor, network: torch.nn.Module,
                     rng: np.random.Generator, spacing: Sequence[float], settings: ClickSimulation
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """``images`` (B, C, *patch) on the network's device and ``labels`` (B, 1, *patch) -> the images with mask,
    include and exclude channels after the simulated session (B, C + 3, *patch), and the labels to learn (the
    given ones, or pseudo-objects where they replaced them)."""
    references = (labels[:, 0] > 0).cpu().numpy()
    if settings.pseudo_objects:
        for b in range(len(references)):
            if rng.random() < settings.pseudo_objects:
                found = pseudo_object(images[b, 0].cpu().numpy(), rng, spacing)
                if found is not None:
                    references[b] = found
    masks, clicks, drawn = [], [], []
    for reference in references:
        if rng.random() < settings.start_empty:
            masks.append(np.zeros_like(reference))
            first = next_click(masks[-1], reference, spacing)
            if first is not None and settings.off_centre:
                first = Click(inner_click_index(reference, rng, spacing), True)
            clicks.append([first] if first is not None else [])
        else:
            masks.append(spoilt_reference(reference, rng, settings))
            clicks.append([])
        drawn.append(drawn_evidence(reference, rng) if reference.any() and rng.random() < settings.drawn_slices
                     else None)

    def assemble() -> torch.Tensor:
        extra = np.stack([correction_channels(m, c, spacing, d) for m, c, d in zip(masks, clicks, drawn)])
        return torch.cat([images, torch.from_numpy(extra).to(images.device, images.dtype)], 1)

    for _ in range(int(rng.integers(settings.min_iterations, settings.max_iterations + 1))):
        answers = _answer(network, assemble())
        for b, (answer, reference) in enumerate(zip(answers, references)):
            masks[b] = keep_drawn(answer, drawn[b])
            click = next_click(answer, reference, spacing)
            if click is not None:
                clicks[b].append(click)
    return assemble(), torch.from_numpy(references[:, None]).to(labels.device, labels.dtype)

