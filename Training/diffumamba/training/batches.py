"""Where every training step's patches come from: samplers built from the run's settings, and a sampler's batch
augmented and moved to the device.

The trainer builds one ``TrainingBatches`` and re-seeds it every epoch; its method (supervised, DALE, Diff-CL)
draws through it. Sampling and augmentation live here, beside the sampler, so the methods need neither the trainer
module nor each other to get a batch.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from .augmentation import training_transforms
from .prior_augmentation import perturb_prior
from .sampling import PatchSampler, TrainingCase, case_weights

__all__ = ["TrainingBatches"]


class TrainingBatches:
    """Samplers and augmented batches of one run.

    Args:
        settings: the run's ``TrainSettings`` (oversampling, case weights, hard negatives, augmentation, task).
        patch_size: the network's patch (voxels of the training grid).
        batch_size: patches per batch.
        device, memory_format: where a batch goes and its layout (channels-last 3D on the CPU).
        network: the network being trained; a correction run feeds it its own answers (``correction_batch``).
        grid_spacing: the training grid's voxel size in mm (click maps of a correction run).
    """

    def __init__(self, settings, patch_size: Sequence[int], batch_size: int, device: torch.device,
                 memory_format: torch.memory_format, network: torch.nn.Module, grid_spacing: Sequence[float]):
        self.settings, self.patch_size, self.batch_size = settings, list(patch_size), batch_size
        self.device, self.memory_format, self.network = device, memory_format, network
        self.grid_spacing = list(grid_spacing)
        self.spatial_plan = None
        if settings.augment and settings.spatial_augmentation != "in-patch":
            from .spatial_augmentation import spatial_plan

            self.spatial_plan = spatial_plan(patch_size)
        self.drawn: list[str] = []            # the cases of the current step's batches (named when its loss is NaN)
        self._prior_rng, self._click_rng, self._transforms = None, None, None

    def reseed(self, seed: int) -> None:
        """Seed the augmentation, the prior perturbation and the simulated clicks (once per epoch)."""
        prior = self.settings.task == "propagation"
        self._transforms = training_transforms(len(self.patch_size), self.settings.elastic, seed=seed,
                                               prior_key=prior, plan=self.spatial_plan) if self.settings.augment else None
        self._prior_rng = np.random.default_rng(seed + 7) if prior else None
        self._click_rng = np.random.default_rng(seed + 11) if self.settings.task == "correction" else None

    def make_sampler(self, cases: Sequence[TrainingCase], seed: int, oversample: Optional[float] = None,
                     for_draw: bool = True) -> PatchSampler:
        """A sampler for ``draw`` (its patches carry the augmentation's margin), or with ``for_draw=False`` one whose
        ``crop`` gives plain patches."""
        margin = self.spatial_plan.margin if for_draw and self.spatial_plan is not None else None
        return PatchSampler(cases, self.patch_size, self.batch_size,
                            self.settings.oversample_foreground if oversample is None else oversample, seed=seed,
                            margin=margin, weights=case_weights([c.name for c in cases], self.settings.case_weights,
                                                                require_match=False),
                            hard_negative=self.settings.hard_negative, in_region=self.settings.lung_region)

    def draw(self, sampler: PatchSampler) -> tuple[torch.Tensor, torch.Tensor]:
        """One augmented batch on the device: images (B, C, *patch) float, labels (B, 1, *patch) long."""
        data, label = sampler.batch()
        self.drawn.extend(sampler.drawn)
        images, labels = torch.from_numpy(data), torch.from_numpy(label)
        prior, transforms = self._prior_rng is not None, self._transforms
        if transforms is not None:
            # The prior GTV channel moves with the anatomy but gets no intensity augmentation.
            items = [transforms({"image": images[i, :-1], "prior": images[i, -1:], "label": labels[i]} if prior
                                else {"image": images[i], "label": labels[i]}) for i in range(len(images))]
            images = torch.stack([torch.cat([torch.as_tensor(item["image"]), torch.as_tensor(item["prior"])])
                                  if prior else torch.as_tensor(item["image"]) for item in items])
            labels = torch.stack([torch.as_tensor(item["label"]) for item in items])
        if prior:
            images = perturb_prior(images.float(), self._prior_rng, self.settings.prior_dropout,
                                   self.settings.prior_perturb)
        images, labels = images.float().to(self.device), labels.round().long().to(self.device)
        if self._click_rng is not None:
            from .click_simulation import ClickSimulation, correction_batch

            labels = (labels > 0).long()
            images, labels = correction_batch(images, labels, self.network, self._click_rng, self.grid_spacing,
                                              ClickSimulation(**self.settings.method_options.get("correction", {})))
        return images.contiguous(memory_format=self.memory_format), labels
