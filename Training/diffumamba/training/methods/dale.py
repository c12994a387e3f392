"""DALE: learn stable representations from reliable cases first, then learn from fuzzy ones with per-voxel label
confidence and feature-distribution alignment, alternating between the two.

Schedule (every number a ``settings.DaleSettings`` field, ``--dale-*`` on the command line):

1. warm-up (``warmup`` of the epochs): every labelled case, plain Dice + CE; the EMA teacher follows the student;
2. partition: the teacher scores every training case on a few patches by its average predictive entropy in the
   label's boundary band (AE) and its error rate around the lesion (ER); ``soft_partition`` splits the cases into
   a stable and a fuzzy set (re-estimated every ``repartition_every`` epochs); with ``band_radius`` 0 the band's
   width is re-derived from the teacher's disagreements with the labels at the same time;
3. stable phase (``phase_epochs``): stable cases, plain loss; the class-conditional statistics of the features of
   their non-fuzzy voxels update the EMA memory;
4. fuzzy phase (``phase_epochs``): fuzzy cases; each voxel of the fuzzy region (boundary band or a teacher entropy
   above ``entropy_threshold``) has its loss weighted by its label confidence omega (``dale_confidence``: by
   default the consistency of its loss, under student and teacher and over the run, with what stable boundaries
   cost; floored at ``confidence_floor``), and the fuzzy voxels' feature Gaussians are pulled to the stable
   memory by a Wasserstein loss (weight ``align_weight``, ramped up over the first ``align_rampup`` of fuzzy steps);
5. alternate 3 and 4 until the end. Inference uses the plain network.
"""

from __future__ import annotations

import json
import math

import numpy as np
import torch
import torch.nn.functional as F

from ...files import atomic_write_text
from ..distributed import gather_rows
from .base import TrainingMethod
from .settings import settings_for
from .dale_confidence import LossHistory, band_radius_from_errors, loss_consistency_confidence, voxel_label_loss
from .dale_losses import (ClassStatistics, alignment_loss, boundary_band, dilate, label_confidence, normalised_entropy,
                          soft_partition, weighted_dice_ce)
from .teacher import EmaTeacher, FeatureTap
from .voxels import sample_per_class

__all__ = ["Dale"]

WARMUP, STABLE, FUZZY = 0, 1, 2
CONFIDENCES = ("loss-consistency", "teacher", "none")
DEFAULT_BAND = 2            # the band until the data have set it (band_radius 0), used by the first partition


class Dale(TrainingMethod):
    name = "dale"

    def __init__(self, trainer):
        super().__init__(trainer)
        self.settings = settings_for("dale", trainer.settings.method_options)
        if self.settings.confidence not in CONFIDENCES:
            raise ValueError(f"--dale-confidence must be one of {', '.join(CONFIDENCES)}, "
                             f"not {self.settings.confidence!r}")
        self.band = self.settings.band_radius or DEFAULT_BAND
        self.case_index = {case.name: index for index, case in enumerate(trainer.train_cases)}
        self.history = LossHistory(len(trainer.train_cases), device=trainer.device)
        self.teacher = EmaTeacher(trainer.network, self.settings.teacher_momentum)
        self.tap = FeatureTap(trainer.network)
        config = trainer.config
        self.memory = ClassStatistics(config.num_classes, config.features_per_stage[0], self.settings.stats_momentum,
                                      device=trainer.device)
        self.partition: dict[str, float] = {}      # case -> fuzzy membership phi
        self.fuzzy_steps = 0
        self.phase = WARMUP

    # -- schedule ----------------------------------------------------------------------------------
    def warmup_epochs(self) -> int:
        return max(1, int(round(self.settings.warmup * self.trainer.settings.epochs)))

    def phase_of(self, epoch: int) -> int:
        after = epoch - self.warmup_epochs()
        if after < 0:
            return WARMUP
        return STABLE if (after // self.settings.phase_epochs) % 2 == 0 else FUZZY

    def begin_epoch(self, epoch: int, seed: int) -> None:
        self.phase = self.phase_of(epoch)
        after = epoch - self.warmup_epochs()
        if self.phase != WARMUP and (not self.partition or after % self.settings.repartition_every == 0):
            # The epoch seed differs by rank (each process draws its own batches); the partition must not, or the
            # processes of one torchrun would train on different stable / fuzzy case sets.
            self.partition = self.estimate_partition(seed - self.trainer.rank)
        cases = self.trainer.train_cases
        if self.phase != WARMUP:
            fuzzy = self.phase == FUZZY
            chosen = [c for c in cases if (self.partition.get(c.name, 0.0) >= 0.5) == fuzzy]
            cases = chosen or cases          # a one-sided partition (few cases): keep training on all
        self.sampler = self.trainer.batches.make_sampler(cases, seed)

    # -- partition ---------------------------------------------------------------------------------
    @torch.no_grad()
    def estimate_partition(self, seed: int) -> dict[str, float]:
        """phi per case from the teacher's average boundary entropy (AE) and lesion-region error rate (ER) on
        ``partition_patches`` patches (half centred on the lesion), after re-deriving the band's width from the
        teacher's disagreements on the same patches (``band_radius`` 0); written to ``dale_partition.json``."""
        trainer, settings = self.trainer, self.settings
        sampler = trainer.batches.make_sampler(trainer.train_cases, seed + 11, for_draw=False)
        scored = []
        for case in trainer.train_cases:
            patches = [sampler.crop(case, sampler.patch_start(case, foreground=i % 2 == 0))
                       for i in range(settings.partition_patches)]
            images = torch.from_numpy(np.stack([p[0] for p in patches])).float().to(trainer.device)
            labels = torch.from_numpy(np.stack([p[1][None] for p in patches]).astype(np.int64)).to(trainer.device)
            scored.append((case.name, labels, self.teacher.probabilities(images)))
        if not settings.band_radius:
            radius = band_radius_from_errors(torch.cat([labels for _, labels, _ in scored]),
                                             torch.cat([probabilities.argmax(1) for _, _, probabilities in scored]))
            self.band = radius or self.band
        names, ae, er = [], [], []
        for name, labels, probabilities in scored:
            entropy = normalised_entropy(probabilities)
            band = boundary_band(labels, self.band)
            prediction = probabilities.argmax(1)
            region = dilate((labels[:, 0] > 0) | (prediction > 0), self.band)
            names.append(name)
            ae.append(float(entropy[band].mean()) if band.any() else float(entropy.mean()))
            er.append(float((prediction != labels[:, 0])[region].float().mean()) if region.any() else 0.0)
        phi = soft_partition(np.array(ae), np.array(er), settings.fuzzy_quantile)
        partition = dict(zip(names, map(float, phi)))
        if trainer.rank == 0:
            trainer.out_dir.mkdir(parents=True, exist_ok=True)
            record = {"band_radius": self.band,
                      "cases": [{"case": n, "average_entropy": a, "error_rate": e, "phi": float(p), "fuzzy": bool(p >= 0.5)}
                                for n, a, e, p in zip(names, ae, er, phi)]}
            atomic_write_text(trainer.out_dir / "dale_partition.json", json.dumps(record, indent=1) + "\n")
        return partition

    # -- losses ------------------------------------------------------------------------------------
    def loss(self):
        trainer = self.trainer
        images, labels = trainer.batches.draw(self.sampler)
        outputs = trainer.model(images)
        if self.phase == WARMUP:
            return trainer.loss(outputs, labels), {"phase": WARMUP}
        features = self.tap.features
        teacher = self.teacher.probabilities(images)
        fuzzy = boundary_band(labels, self.band) | (normalised_entropy(teacher) > self.settings.entropy_threshold)
        logits = outputs[0] if isinstance(outputs, (list, tuple)) else outputs
        loss = voxel_label_loss(logits.detach(), teacher, labels)
        cases = torch.as_tensor([self.case_index[name] for name in self.sampler.drawn], device=loss.device)
        self.history.observe(cases, loss, fuzzy, labels)
        if self.phase == STABLE:
            self._remember(features.detach(), labels, ~fuzzy)
            return trainer.loss(outputs, labels), {"phase": STABLE, "fuzzy_voxel_fraction": float(fuzzy.float().mean())}
        confidence = self._confidence(teacher, labels, loss, cases)
        weight = torch.where(fuzzy, confidence, torch.ones_like(confidence))
        supervised = self._weighted(outputs, labels, weight)
        believed = torch.where(weight >= 0.5, labels[:, 0], logits.detach().argmax(1))
        align = alignment_loss(*self._sample(features, believed, fuzzy), self.memory)
        ramp = min(1.0, self.fuzzy_steps / max(1.0, self.settings.align_rampup * self._total_fuzzy_steps()))
        self.fuzzy_steps += 1
        lambda_da = self.settings.align_weight * math.exp(-5 * (1 - ramp) ** 2)
        scalars = {"phase": FUZZY, "confidence_mean": float(confidence[fuzzy].mean()) if fuzzy.any() else math.nan,
                   "confidence_low_fraction": float((confidence[fuzzy] < 0.5).float().mean()) if fuzzy.any() else math.nan,
                   "align_loss": float(align.detach()), "align_weight": lambda_da,
                   "fuzzy_voxel_fraction": float(fuzzy.float().mean())}
        return supervised + lambda_da * align, scalars

    def _confidence(self, teacher, labels, loss, cases):
        """omega per voxel, by ``--dale-confidence``."""
        settings = self.settings
        if settings.confidence == "none":
            return torch.ones_like(loss)
        if settings.confidence == "teacher":
            return label_confidence(teacher, labels, settings.confidence_floor)
        stable = [self.case_index[name] for name, phi in self.partition.items() if phi < 0.5]
        return loss_consistency_confidence(loss, self.history.means()[cases], labels, self.history.reference(stable),
                                           settings.confidence_temperature, settings.confidence_floor)

    def _weighted(self, outputs, labels, weight):
        """The deep-supervision sum of the confidence-weighted loss (labels and weights resampled to each level)."""
        batch_dice = self.trainer.settings.batch_dice
        if isinstance(outputs, torch.Tensor):
            return weighted_dice_ce(outputs, labels, weight, batch_dice)
        total = outputs[0].new_zeros((), dtype=torch.float32)
        for ds_weight, logits in zip(self.trainer.loss.weights, outputs):
            if ds_weight == 0:
                continue
            size = logits.shape[2:]
            level_labels = labels if size == labels.shape[2:] else F.interpolate(labels.float(), size=size).long()
            level_weight = weight if size == weight.shape[1:] else F.interpolate(weight[:, None], size=size)[:, 0]
            total = total + ds_weight * weighted_dice_ce(logits, level_labels, level_weight, batch_dice)
        return total

    def _sample(self, features: torch.Tensor, classes: torch.Tensor, mask: torch.Tensor):
        """(N, D) features and (N,) classes of the masked voxels, at most ``max_voxels`` per class."""
        generator = torch.Generator().manual_seed(self.trainer.iteration)
        return sample_per_class(features, classes, mask, self.settings.max_voxels, generator)

    def _remember(self, features, labels, stable):
        # Every process's stable voxels update every process's memory alike: all ranks align to one memory, and
        # the one rank 0 saves is the one they all hold (an exact multi-GPU resume).
        self.memory.update(*gather_rows(*self._sample(features, labels[:, 0], stable)))

    def _total_fuzzy_steps(self) -> int:
        epochs = self.trainer.settings.epochs - self.warmup_epochs()
        return max(1, epochs // 2) * self.trainer.settings.iterations_per_epoch

    def after_step(self) -> None:
        self.teacher.update(self.trainer.network)

    def end_epoch(self, epoch: int) -> dict[str, float]:
        if not self.partition:
            return {}
        phi = np.array(list(self.partition.values()))
        return {"fuzzy_cases": float((phi >= 0.5).sum()), "phi_mean": float(phi.mean()), "band_radius": float(self.band)}

    # -- resume ------------------------------------------------------------------------------------
    def state(self):
        tensors = {f"teacher.{k}": v for k, v in self.teacher.state_dict().items()}
        tensors.update({f"memory.{k}": v for k, v in self.memory.state().items()})
        tensors.update({f"history.{k}": v for k, v in self.history.state().items()})
        return tensors, {"partition": self.partition, "fuzzy_steps": self.fuzzy_steps, "band_radius": self.band}

    def load_state(self, tensors, info):
        self.teacher.load_state_dict({k[len("teacher."):]: v for k, v in tensors.items() if k.startswith("teacher.")})
        self.memory.load({k[len("memory."):]: v for k, v in tensors.items() if k.startswith("memory.")})
        self.history.load({k[len("history."):]: v for k, v in tensors.items() if k.startswith("history.")})
        self.partition, self.fuzzy_steps = dict(info.get("partition", {})), int(info.get("fuzzy_steps", 0))
        self.band = int(info.get("band_radius", self.band))
