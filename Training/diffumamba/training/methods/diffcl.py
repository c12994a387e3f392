"""Diff-CL: a diffusion segmentation branch (DS) and the CNN branch (CS, the trained network, with high-frequency
Mamba modules) teach each other on unlabelled cases, and contrastive label propagation carries the labelled cases'
class semantics to confident unlabelled voxels.

Per step (a labelled and an unlabelled batch), with ``mu`` ramped up as ``pseudo_weight * exp(-5 (1 - t/t_r)^2)``:

- ``L_c_s``: CS on the labelled batch, Dice + CE with deep supervision;
- ``L_d_s``: DS denoises a noised labelled mask given the image, Dice + CE against the label;
- ``L_c_p``: CS on the unlabelled batch against DS's DDIM prediction (no gradient into DS);
- ``L_d_p``: DS denoises a noised CS pseudo-label of the unlabelled batch (no gradient into CS);
- ``L_cl``: InfoNCE of CS's projected features of confident unlabelled voxels (both branches agree, both above
  ``confidence``) against a per-class memory of labelled voxels' embeddings;

``loss = L_c_s + L_d_s + mu (L_c_p + eta L_cl) + mu L_d_p``. The checkpoint is CS (what ``predict`` runs); DS,
the projection head and the memory travel in ``last.safetensors`` for resuming.
"""

from __future__ import annotations

import math

import torch

from ...nets import build_network
from ..losses import DiceCELoss
from .base import TrainingMethod, with_high_frequency_stages
from .contrastive import MemoryBank, ProjectionHead, info_nce
from .diffusion import MaskDiffusion
from .settings import settings_for
from .teacher import FeatureTap
from .voxels import sample_per_class

__all__ = ["DiffCL", "denoiser_config"]


def denoiser_config(config):
    """DS: the same network family and plan, fed the image and the noisy mask, conditioned on the timestep, one
    output (no deep supervision) and no high-frequency modules."""
    return config.replace(in_channels=config.in_channels + config.num_classes, time_conditioning=True,
                          deep_supervision=False, high_frequency_stages=[])


class DiffCL(TrainingMethod):
    name = "diffcl"

    @staticmethod
    def adapt_config(config, options: dict):
        return with_high_frequency_stages(config, options)

    def __init__(self, trainer):
        super().__init__(trainer)
        if not trainer.unlabeled_cases:
            raise ValueError("Diff-CL needs unlabelled cases (--labeled-fraction below 1, or --labeled)")
        self.settings = settings = settings_for("diffcl", trainer.settings.method_options)
        config = trainer.config
        self.n_classes = config.num_classes
        self.diffusion = MaskDiffusion(settings.timesteps, device=trainer.device)
        self.denoiser = build_network(denoiser_config(config))
        self.projection = ProjectionHead(config.features_per_stage[0], settings.projection_dim)
        self.memory = MemoryBank(config.num_classes, settings.memory_size, settings.projection_dim, trainer.device)
        self.tap = FeatureTap(trainer.network)
        self.dice_ce = DiceCELoss()

    def modules(self):
        return {"denoiser": self.denoiser, "projection": self.projection}

    def begin_epoch(self, epoch: int, seed: int) -> None:
        self.labelled = self.trainer.make_sampler(self.trainer.train_cases, seed)
        self.unlabelled = self.trainer.make_sampler(self.trainer.unlabeled_cases, seed + 1, oversample=0.0)

    def ramp(self) -> float:
        progress = self.trainer.iteration / max(1.0, self.settings.rampup * self.trainer.total_iterations)
        return self.settings.pseudo_weight * math.exp(-5 * (1 - min(1.0, progress)) ** 2)

    def loss(self):
        trainer, settings = self.trainer, self.settings
        images_l, labels_l = trainer.draw(self.labelled)
        images_u, _ = trainer.draw(self.unlabelled)
        outputs_l = trainer.model(images_l)
        features_l = self.tap.features
        outputs_u = trainer.model(images_u)
        features_u = self.tap.features
        logits_u = _full_resolution(outputs_u)
        cnn_supervised = trainer.loss(outputs_l, labels_l)

        noisy, t = self.diffusion.noisy_masks(labels_l, self.n_classes)
        diffusion_supervised = self.dice_ce(self.denoiser(torch.cat([images_l, noisy], 1), t), labels_l)

        diffusion_probabilities = self.diffusion.sample(self.denoiser, images_u, self.n_classes,
                                                        settings.train_sampling_steps)
        diffusion_labels = diffusion_probabilities.argmax(1, keepdim=True)
        cnn_pseudo = trainer.loss(outputs_u, diffusion_labels)

        cnn_probabilities = torch.softmax(logits_u.detach().float(), 1)
        cnn_labels = cnn_probabilities.argmax(1, keepdim=True)
        noisy_u, t_u = self.diffusion.noisy_masks(cnn_labels, self.n_classes)
        diffusion_pseudo = self.dice_ce(self.denoiser(torch.cat([images_u, noisy_u], 1), t_u), cnn_labels)

        generator = torch.Generator().manual_seed(trainer.iteration)
        correct = _full_resolution(outputs_l).detach().argmax(1) == labels_l[:, 0]
        self._remember(features_l.detach(), labels_l[:, 0], correct, generator)
        agree = (cnn_labels == diffusion_labels)[:, 0] & \
            (cnn_probabilities.amax(1) > settings.confidence) & (diffusion_probabilities.amax(1) > settings.confidence)
        anchor_features, anchor_classes = sample_per_class(features_u, cnn_labels[:, 0], agree,
                                                           max(1, settings.anchors // self.n_classes), generator)
        contrastive = info_nce(self.projection(anchor_features), anchor_classes, self.memory, settings.temperature)

        mu = self.ramp()
        total = cnn_supervised + diffusion_supervised + mu * (cnn_pseudo + settings.contrastive_weight * contrastive) \
            + mu * diffusion_pseudo
        scalars = {"cnn_supervised": float(cnn_supervised.detach()), "diffusion_supervised": float(diffusion_supervised.detach()),
                   "cnn_pseudo": float(cnn_pseudo.detach()), "diffusion_pseudo": float(diffusion_pseudo.detach()),
                   "contrastive": float(contrastive.detach()), "pseudo_weight": mu,
                   "agreement": float((cnn_labels == diffusion_labels).float().mean()),
                   "anchors": float(len(anchor_features))}
        return total, scalars

    def _remember(self, features, labels, correct, generator) -> None:
        """Embeddings of labelled voxels into the memory, correctly predicted voxels first (any voxel of a class
        none of whose voxels is predicted correctly)."""
        per_class = self.settings.memory_per_batch
        chosen, classes = sample_per_class(features, labels, correct, per_class, generator)
        for c in range(self.n_classes):
            if not (classes == c).any():
                extra, extra_classes = sample_per_class(features, labels, labels == c, per_class, generator)
                chosen, classes = torch.cat([chosen, extra]), torch.cat([classes, extra_classes])
        with torch.no_grad():
            self.memory.push(self.projection(chosen), classes)

    def state(self):
        return {f"memory.{k}": v for k, v in self.memory.state().items()}, {}

    def load_state(self, tensors, info):
        self.memory.load({k[len("memory."):]: v for k, v in tensors.items() if k.startswith("memory.")})


def _full_resolution(outputs):
    return outputs[0] if isinstance(outputs, (list, tuple)) else outputs
