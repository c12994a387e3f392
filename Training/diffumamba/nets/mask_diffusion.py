"""Diffusion of segmentation masks for Diff-CL's diffusion branch, after the GenericSSL template
(docs/methods.md): one-hot masks scaled to [-1, 1] are noised with a linear beta schedule; the denoiser sees the
image concatenated with the noisy mask and the timestep, and predicts the clean mask's logits (trained with
Dice + CE, not MSE on the noise); predictions come from deterministic DDIM sampling with a few steps.

It lives with the networks, not the training code, because a trained diffusion branch is a segmenter of its own
(``DiffusionSegmenter``) that ``predict`` and ``experiment`` run like any checkpoint."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MaskDiffusion", "DiffusionSegmenter"]


class MaskDiffusion:
    """Args:
        timesteps: T of the forward process.
        beta_start, beta_end: the linear beta schedule (DDPM's).
    """

    def __init__(self, timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02, device=None):
        if timesteps < 2:
            raise ValueError("the diffusion needs at least 2 timesteps")
        betas = torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
        self.timesteps = timesteps
        self.alpha_bar = torch.cumprod(1 - betas, 0).float().to(device)

    @staticmethod
    def mask_to_x0(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
        """(B, 1, *S) integer labels -> (B, K, *S) one-hot scaled to [-1, 1]."""
        return F.one_hot(labels[:, 0].long(), n_classes).movedim(-1, 1).float() * 2 - 1

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise."""
        shape = (-1,) + (1,) * (x0.dim() - 1)
        abar = self.alpha_bar[t].view(shape)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def noisy_masks(self, labels: torch.Tensor, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_t, t) for a training step: a uniform random timestep per sample."""
        x0 = self.mask_to_x0(labels, n_classes)
        t = torch.randint(0, self.timesteps, (len(labels),), device=labels.device)
        return self.q_sample(x0, t, torch.randn_like(x0)), t

    def ddim_timesteps(self, steps: int) -> list[int]:
        """``steps`` evenly spaced timesteps from T - 1 down to 0."""
        steps = max(1, min(steps, self.timesteps))
        return torch.linspace(self.timesteps - 1, 0, steps).round().long().tolist()

    @torch.no_grad()
    def sample(self, denoiser, images: torch.Tensor, n_classes: int, steps: int,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Class probabilities (B, K, *S) by deterministic DDIM (eta 0) from pure noise (drawn from ``generator``
        when given): at each step the denoiser's x0 estimate (softmax scaled to [-1, 1]) and the implied noise give
        the next, less noisy mask."""
        shape = (images.shape[0], n_classes, *images.shape[2:])
        x = torch.randn(shape, generator=generator, device=generator.device if generator else images.device)
        x = x.to(images.device)
        times = self.ddim_timesteps(steps)
        probabilities = None
        for index, t in enumerate(times):
            step = torch.full((len(images),), t, device=images.device, dtype=torch.long)
            probabilities = torch.softmax(denoiser(torch.cat([images, x], 1), step).float(), 1)
            if index == len(times) - 1:
                break
            x0 = probabilities * 2 - 1
            abar, abar_next = self.alpha_bar[t], self.alpha_bar[times[index + 1]]
            noise = (x - abar.sqrt() * x0) / (1 - abar).sqrt()
            x = abar_next.sqrt() * x0 + (1 - abar_next).sqrt() * noise
        return probabilities


class DiffusionSegmenter(nn.Module):
    """A trained diffusion branch as a segmentation network: ``forward(images)`` gives log class probabilities
    from ``sampling_steps`` DDIM steps, so the softmax every predictor applies returns DDIM's probabilities, and
    averaging with another network's softmax is the branches' mean. The starting noise is seeded per call
    (``seed``): the same image gives the same segmentation every time, as a clinician expects of a model.

    Args:
        denoiser: the time-conditioned network (image + noisy one-hot mask in, clean mask logits out).
        n_classes: classes of the mask.
        timesteps: T of the schedule it was trained with.
        sampling_steps: DDIM steps at inference.
    """

    def __init__(self, denoiser: nn.Module, n_classes: int, timesteps: int, sampling_steps: int, seed: int = 0):
        super().__init__()
        self.denoiser = denoiser
        self.n_classes, self.sampling_steps, self.seed = n_classes, sampling_steps, seed
        self.diffusion = MaskDiffusion(timesteps)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.diffusion.alpha_bar = self.diffusion.alpha_bar.to(images.device)
        generator = torch.Generator().manual_seed(self.seed)
        probabilities = self.diffusion.sample(self.denoiser, images, self.n_classes, self.sampling_steps, generator)
        return probabilities.clamp_min(1e-8).log()

    # The checkpoint holds the denoiser's weights under their own names.
    def state_dict(self, *args, **kwargs):
        return self.denoiser.state_dict(*args, **kwargs)

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        return self.denoiser.load_state_dict(state, strict=strict, assign=assign)
