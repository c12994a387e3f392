"""Diff-CL: a diffusion segmentation branch (DS) and the CNN branch (CS, the trained network, with high-frequency
Mamba modules) teach each other on unlabelled cases, and contrastive label propagation carries the labelled cases'
class semantics to confident unlabelled voxels.

Per step (a labelled and an unlabelled batch), with ``mu`` ramped up as ``pseudo_weight * exp(-5 (1 - t/t_r)^2)``:

- ``L_c_s``: CS on the labelled batch, Dice + CE with deep supervision;
- ``L_d_s``: DS denoises a noised labelled mask given the image, Dice + CE against the label;
- ``L_c_p``: CS on the unlabelled batch against DS's DDIM prediction (no gradient into DS);
- ``L_d_p``: DS denoises a noised CS pseudo-label of the unlabelled batch (no gradient into CS);
- ``L_cl``: contrastive label propagation: unlabelled voxels (drawn per CS class) take the class their projected
  features' nearest labelled embeddings (a per-class memory) vote for; where the vote is clear, InfoNCE towards
  that class plus CS's cross-entropy against it (``--diffcl-contrastive agreement``: InfoNCE only, on voxels both
  branches confidently agree on);

``loss = L_c_s + L_d_s + mu (L_c_p + eta L_cl) + mu L_d_p``. Unlabelled patches are centred on CS's foreground as
labelled ones are on the label's (CS re-segments the unlabelled cases every ``pseudo_label_every`` epochs).
The checkpoint is CS (what ``predict`` runs); DS, the projection head, the memory and the pseudo-label locations
travel in ``last.safetensors`` for resuming, and at the end DS is also written as ``diffusion.safetensors``, a
checkpoint ``predict`` runs with ``sampling_steps`` DDIM steps.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ...nets import build_network
from ...nets.mask_diffusion import MaskDiffusion
from ..distributed import broadcast_object, gather_rows
from ..losses import DiceCELoss
from ..sampling import MAX_LOCATIONS
from .base import TrainingMethod, with_high_frequency_stages
from .contrastive import MemoryBank, ProjectionHead, info_nce, label_propagation_loss
from .settings import settings_for
from .teacher import FeatureTap
from .voxels import sample_per_class

CONTRASTIVE = ("propagation", "agreement")

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
        if settings.contrastive not in CONTRASTIVE:
            raise ValueError(f"--diffcl-contrastive must be one of {', '.join(CONTRASTIVE)}, not {settings.contrastive!r}")
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
        every = self.settings.pseudo_label_every
        if every > 0 and epoch > 0 and epoch % every == 0:
            self._locate_pseudo_foreground(seed)
        self.labelled = self.trainer.batches.make_sampler(self.trainer.train_cases, seed)
        # The unlabelled sampler oversamples like the labelled one, centred on CS's last pseudo-foreground (a
        # case without any yet gets a random patch: the sampler's fallback).
        self.unlabelled = self.trainer.batches.make_sampler(self.trainer.unlabeled_cases, seed + 1,
                                                    oversample=None if every > 0 else 0.0)

    @torch.no_grad()
    def _locate_pseudo_foreground(self, seed: int) -> None:
        """CS segments every unlabelled case (non-overlapping tiles: a location map, not a result), and up to
        ``MAX_LOCATIONS`` of its foreground voxels per class become the case's sampling locations. Rank 0's
        locations are everybody's, so every process draws from the same ones."""
        from ...inference.sliding_window import sliding_window_logits

        trainer = self.trainer
        found = []
        if trainer.rank == 0:
            rng = np.random.default_rng(seed)
            for case in trainer.unlabeled_cases:
                prediction = sliding_window_logits(trainer.network, case.data, trainer.config.patch_size, 0.0,
                                                   trainer.device).argmax(0).numpy()
                locations = {}
                for value in range(1, self.n_classes):
                    where = np.argwhere(prediction == value).astype(np.int32)
                    if len(where) > MAX_LOCATIONS:
                        where = where[rng.choice(len(where), MAX_LOCATIONS, replace=False)]
                    if len(where):
                        locations[value] = where
                found.append(locations)
        self._set_locations(broadcast_object(found))

    def _set_locations(self, found: list[dict]) -> None:
        for case, locations in zip(self.trainer.unlabeled_cases, found):
            case.locations = locations

    def ramp(self) -> float:
        progress = self.trainer.iteration / max(1.0, self.settings.rampup * self.trainer.total_iterations)
        return self.settings.pseudo_weight * math.exp(-5 * (1 - min(1.0, progress)) ** 2)

    def loss(self):
        trainer, settings = self.trainer, self.settings
        images_l, labels_l = trainer.batches.draw(self.labelled)
        images_u, _ = trainer.batches.draw(self.unlabelled)
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
        per_class = max(1, settings.anchors // self.n_classes)
        if settings.contrastive == "propagation":
            # Candidates of every class CS sees, confident or not: propagation decides their class.
            both, _ = sample_per_class(torch.cat([features_u, logits_u], 1), cnn_labels[:, 0],
                                       torch.ones_like(cnn_labels[:, 0], dtype=torch.bool), per_class, generator)
            anchor_features, anchor_logits = both.split([features_u.shape[1], logits_u.shape[1]], 1)
            contrastive, used = label_propagation_loss(self.projection(anchor_features), anchor_logits, self.memory,
                                                       settings.temperature, settings.neighbours, settings.confidence)
            n_anchors = int(used.sum())
        else:
            agree = (cnn_labels == diffusion_labels)[:, 0] & (cnn_probabilities.amax(1) > settings.confidence) \
                & (diffusion_probabilities.amax(1) > settings.confidence)
            anchor_features, anchor_classes = sample_per_class(features_u, cnn_labels[:, 0], agree, per_class,
                                                               generator)
            contrastive = info_nce(self.projection(anchor_features), anchor_classes, self.memory,
                                   settings.temperature)
            n_anchors = len(anchor_features)

        mu = self.ramp()
        total = cnn_supervised + diffusion_supervised + mu * (cnn_pseudo + settings.contrastive_weight * contrastive) \
            + mu * diffusion_pseudo
        scalars = {"cnn_supervised": float(cnn_supervised.detach()), "diffusion_supervised": float(diffusion_supervised.detach()),
                   "cnn_pseudo": float(cnn_pseudo.detach()), "diffusion_pseudo": float(diffusion_pseudo.detach()),
                   "contrastive": float(contrastive.detach()), "pseudo_weight": mu,
                   "agreement": float((cnn_labels == diffusion_labels).float().mean()),
                   "anchors": float(n_anchors)}
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
            self.memory.push(*gather_rows(self.projection(chosen), classes))    # every process's, in rank order

    def end_epoch(self, epoch: int) -> dict[str, float]:
        if epoch + 1 == self.trainer.settings.epochs and self.trainer.rank == 0:
            self.save_diffusion_branch(self.trainer.out_dir / "diffusion.safetensors")
        located = [sum(len(v) for v in case.locations.values()) for case in self.trainer.unlabeled_cases]
        return {"pseudo_foreground_cases": float(sum(n > 0 for n in located))}

    def save_diffusion_branch(self, path) -> None:
        """DS as a checkpoint of its own: ``load_model`` turns it into a ``DiffusionSegmenter`` that samples with
        ``sampling_steps`` DDIM steps, so ``predict`` and ``experiment`` run it like any network."""
        from dataclasses import asdict

        from ...checkpoint import save_checkpoint

        trainer, settings = self.trainer, self.settings
        meta = {**trainer.meta, "diffusion": {"timesteps": settings.timesteps, "sampling_steps": settings.sampling_steps,
                                              "n_classes": self.n_classes},
                "training": {"epoch": trainer.settings.epochs, "settings": asdict(trainer.settings),
                             "batch_size": trainer.batch_size, "branch": "diffusion"}}
        save_checkpoint(path, self.denoiser, denoiser_config(trainer.config), meta)

    def state(self):
        tensors = {f"memory.{k}": v for k, v in self.memory.state().items()}
        for index, case in enumerate(self.trainer.unlabeled_cases):
            for value, where in case.locations.items():
                tensors[f"pseudo_locations.{index}.{value}"] = torch.from_numpy(np.ascontiguousarray(where))
        return tensors, {}

    def load_state(self, tensors, info):
        self.memory.load({k[len("memory."):]: v for k, v in tensors.items() if k.startswith("memory.")})
        found = [{} for _ in self.trainer.unlabeled_cases]
        for key, value in tensors.items():
            if key.startswith("pseudo_locations."):
                index, label = map(int, key.split(".")[1:])
                found[index][label] = value.cpu().numpy()
        self._set_locations(found)


def _full_resolution(outputs):
    return outputs[0] if isinstance(outputs, (list, tuple)) else outputs
