"""What a training method is to the trainer: a way to turn batches into a loss.

The trainer owns everything methods share: the network, one SGD optimiser over the network and the method's
own modules, the learning-rate schedule, clipping, AMP, validation, checkpoints and resume. A method decides
which cases it draws from, what the loss is, and what it keeps between steps (an EMA teacher, statistics, a
second network); that state travels in the ``last`` checkpoint so a killed run resumes exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from ..batches import TrainingBatches
from ..sampling import TrainingCase

__all__ = ["MethodHost", "TrainingMethod", "Supervised", "SupervisedHighFrequency", "with_high_frequency_stages"]


class MethodHost(Protocol):
    """What a method uses of the trainer that builds it (``training.trainer.Trainer``): the methods are typed by
    this, not by the trainer's module, which imports them."""

    settings: object                      # TrainSettings
    config: object                        # the NetworkConfig it trains
    network: nn.Module
    model: nn.Module                      # the network, wrapped by DistributedDataParallel under torchrun
    loss: nn.Module                       # Dice + CE with deep supervision
    batches: TrainingBatches
    train_cases: list[TrainingCase]
    unlabeled_cases: list[TrainingCase]
    device: torch.device
    out_dir: Path
    meta: dict
    rank: int
    batch_size: int
    iteration: int
    total_iterations: int


class TrainingMethod:
    """Base class: plain supervised training on the labelled cases (``Supervised`` is this class)."""

    name = "supervised"

    def __init__(self, trainer: MethodHost):
        self.trainer = trainer

    @staticmethod
    def adapt_config(config, options: dict):
        """The network config this method trains (e.g. Diff-CL adds its high-frequency Mamba stages);
        ``options``: ``TrainSettings.method_options``."""
        return config

    def modules(self) -> dict[str, nn.Module]:
        """Extra trainable modules, optimised with the network and saved with it."""
        return {}

    def begin_epoch(self, epoch: int, seed: int) -> None:
        self.sampler = self.trainer.batches.make_sampler(self.trainer.train_cases, seed)

    def loss(self) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of one step (inside the trainer's autocast) and scalars to log."""
        images, labels = self.trainer.batches.draw(self.sampler)
        return self.trainer.loss(self.trainer.model(images), labels), {}

    def after_step(self) -> None:
        """Called after every optimiser step (EMA updates, memories)."""

    def end_epoch(self, epoch: int) -> dict[str, float]:
        """Scalars to log once per epoch (besides the mean of the per-step ones)."""
        return {}

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """Tensors and JSON-able facts to resume from (the modules' weights are saved by the trainer)."""
        return {}, {}

    def load_state(self, tensors: dict[str, torch.Tensor], info: dict) -> None:
        """Restore what ``state`` returned."""


Supervised = TrainingMethod


def with_high_frequency_stages(config, options: dict):
    """``config`` with the high-frequency Mamba module on its deepest ``--diffcl-high-frequency-stages`` encoder
    stages below the bottleneck (unless it already has some): Diff-CL's CNN branch, and the supervised control."""
    from .settings import settings_for

    if config.high_frequency_stages:
        return config
    count = settings_for("diffcl", options).high_frequency_stages
    deepest = config.n_stages - 1                      # the bottleneck is excluded
    return config.replace(high_frequency_stages=list(range(max(0, deepest - count), deepest)))


class SupervisedHighFrequency(TrainingMethod):
    """Supervised training of the network Diff-CL's CNN branch is (the same high-frequency Mamba stages, set by
    ``--diffcl-high-frequency-stages``): the control arm that separates what the module does from what the
    semi-supervised method does."""

    name = "supervised-hf"

    @staticmethod
    def adapt_config(config, options: dict):
        return with_high_frequency_stages(config, options)

