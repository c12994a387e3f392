"""nnU-Net v2's default trainer at a fixed, small budget, for ``bench/versus_nnunet.py``.

Everything that makes nnU-Net nnU-Net stays as it is: its data loader and foreground oversampling, its
augmentation pipeline (with background workers), Dice + CE with deep supervision, SGD with Nesterov momentum
0.99, poly learning rate, He init with the residual blocks' last norm at zero. Only the budget changes, read
from the environment so one class serves every run:

- ``BUDGET_EPOCHS`` x ``BUDGET_ITERATIONS`` training iterations (nnU-Net: 1000 x 250);
- ``BUDGET_LR`` (nnU-Net: 1e-2);
- one validation batch per epoch instead of 50 (nnU-Net needs one to log its pseudo Dice; it is not used);
- no final validation: the benchmark predicts the held-out case with ``nnUNetv2_predict`` and scores it with
  ``diffumamba evaluate``, as it scores our arms.

Seconds of the training iterations alone (the validation batch excluded) go to ``train_seconds.json``.
nnU-Net finds trainers by class name inside its own package, so ``bench/versus_nnunet.py`` copies this file
into ``nnunetv2/training/nnUNetTrainer/`` before training (nnU-Net's documented way to add a trainer).
"""

import json
import os
from os.path import join
from time import perf_counter

import torch

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainerBudget(nnUNetTrainer):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = int(os.environ.get("BUDGET_EPOCHS", "10"))
        self.num_iterations_per_epoch = int(os.environ.get("BUDGET_ITERATIONS", "25"))
        self.initial_lr = float(os.environ.get("BUDGET_LR", "1e-2"))
        self.num_val_iterations_per_epoch = 1
        self.save_every = 10 ** 6
        self._train_seconds: list[float] = []

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        self._epoch_start = perf_counter()

    def on_train_epoch_end(self, train_outputs):
        self._train_seconds.append(perf_counter() - self._epoch_start)
        super().on_train_epoch_end(train_outputs)

    def on_train_end(self):
        super().on_train_end()
        with open(join(self.output_folder, "train_seconds.json"), "w") as handle:
            json.dump({"epoch_seconds": self._train_seconds, "iterations_per_epoch": self.num_iterations_per_epoch,
                       "epochs": self.num_epochs, "initial_lr": self.initial_lr}, handle, indent=1)

    def perform_actual_validation(self, save_probabilities: bool = False):
        self.print_to_log_file("final validation skipped: bench/versus_nnunet.py predicts and scores the held-out cases")
