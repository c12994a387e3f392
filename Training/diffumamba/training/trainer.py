"""Supervised training loop: nnU-Net's recipe with the official Diff-UMamba learning rate.

SGD with Nesterov momentum 0.99 and weight decay 3e-5, polynomial learning-rate decay (power 0.9) per
epoch, gradient clipping at norm 12, Dice + CE with deep supervision, foreground oversampling and
nnU-Net-like augmentation, AMP on CUDA. The initial learning rate defaults to 1e-3 for Diff-UMamba (the
official trainer's value) and 1e-2 (nnU-Net's) for the other networks.

Every epoch's randomness (patch choice, augmentation, torch) is seeded from (seed, epoch, rank), and
the last checkpoint is written atomically at the end of every epoch, so a killed run resumed with the
same seed reproduces the uninterrupted run's weights exactly.

The loss of a step comes from the training method (``--method``): supervised, DALE or Diff-CL
(``training.methods``); the method's own modules and state are optimised and checkpointed with the network.

Launched by ``torchrun`` (WORLD_SIZE > 1) it trains with DistributedDataParallel: NCCL on GPUs (one per
process), gloo on CPUs; every process draws its own batches, rank 0 alone validates, logs and writes
checkpoints.
"""

from __future__ import annotations

import csv
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ..devices import convolution_memory_format, resolve_device
from ..nets import NetworkConfig, build_network
from ..checkpoint import load_checkpoint, load_method_tensors, save_checkpoint
from ..data.dataset import nonfinite_count
from .losses import DeepSupervisionLoss, DiceCELoss, deep_supervision_weights
from .methods import build_method
from .batches import TrainingBatches
from .sampling import TrainingCase, case_weights

__all__ = ["TrainSettings", "Trainer", "NonFiniteLossError", "default_learning_rate", "parameter_groups"]


class NonFiniteLossError(ValueError):
    """The training loss became NaN or Inf: training stops before the step, so no checkpoint holds NaN."""


def default_learning_rate(network: str) -> float:
    return 1e-3 if network == "diffumamba" else 1e-2


@dataclass
class TrainSettings:
    epochs: int = 1000
    iterations_per_epoch: int = 250
    initial_lr: Optional[float] = None          # None: 1e-3 for diffumamba, 1e-2 otherwise
    momentum: float = 0.99
    weight_decay: float = 3e-5
    grad_clip: float = 12.0
    oversample_foreground: float = 0.33
    batch_dice: bool = False         # pool the Dice over the batch (nnU-Net's 3d_fullres on large images)
    zero_init_residual: bool = False  # residual blocks start as their shortcut, heads at 0 (ResUNet.zero_init_outputs)
    validate_every: int = 50
    sw_overlap: float = 0.5
    augment: bool = True
    spatial_augmentation: str = "enlarged"  # nnU-Net's rotate/scale of a larger box, cropped; "in-patch": the patch
    elastic: bool = False
    seed: int = 0
    device: str = "auto"
    task: str = "segmentation"       # "propagation": the last input channel is the prior GTV (see prior_augmentation);
                                     # "correction": mask and click channels are simulated (see click_simulation)
    prior_dropout: float = 0.2
    prior_perturb: float = 0.5
    method: str = "supervised"       # "dale", "diffcl": see training.methods
    method_options: dict = field(default_factory=dict)   # the method's settings (its dataclass's fields)
    case_weights: dict = field(default_factory=dict)     # case-name regex -> how many times as often it is drawn
    hard_negative: float = 0.0       # chance of a non-foreground patch to be centred on soft tissue (hard_negatives)
    lung_region: bool = False        # random patches centred in each case's lung box only (hard_negatives)


class Trainer:
    """Trains one network on preprocessed cases and writes ``last``/``best`` checkpoints and a CSV log.

    Args:
        config: the network to train (its ``patch_size`` is the training patch).
        train_cases, val_cases: preprocessed cases; validation runs sliding-window inference on whole volumes.
        unlabeled_cases: cases whose labels the method must not see (semi-supervised methods only).
        out_dir: run folder (checkpoints, ``log.csv``).
        settings: optimisation settings.
        batch_size: patches per step.
        meta: extra checkpoint header entries (plan, labels, provenance of the data, ...).
    """

    def __init__(self, config: NetworkConfig, train_cases: Sequence[TrainingCase], val_cases: Sequence[TrainingCase],
                 out_dir: Path, settings: TrainSettings, batch_size: int = 2, meta: Optional[dict] = None,
                 unlabeled_cases: Sequence[TrainingCase] = (), validator=None):
        self.settings, self.batch_size = settings, batch_size
        self.validator = validator          # (network, device) -> score; None: Dice on the preprocessed val cases
        self.train_cases, self.val_cases = list(train_cases), list(val_cases)
        self.unlabeled_cases = [hide_label(case) for case in unlabeled_cases]
        # each --case-weight must match a training case; a sampler of a subset (DALE's stable or fuzzy cases,
        # Diff-CL's labelled or unlabelled ones) may hold none of them
        case_weights([c.name for c in self.train_cases + self.unlabeled_cases], settings.case_weights)
        self.out_dir = Path(out_dir)
        self.meta = meta or {}
        self.device = resolve_device(settings.device)
        self.world_size, self.rank = _init_distributed(self.device)
        if self.device.type == "cuda" and self.world_size > 1:
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(self.device)
        self.lr = settings.initial_lr or default_learning_rate(config.network)
        method_class = build_method(settings.method)
        self.config = config = method_class.adapt_config(config, settings.method_options)
        torch.manual_seed(settings.seed)
        self.memory_format = convolution_memory_format(self.device, config.spatial_dims)
        self.network = build_network(config).to(self.device)
        if settings.zero_init_residual:
            self.network.zero_init_outputs()
        self.network.to(memory_format=self.memory_format)
        self.model = self.network
        n_outputs = config.n_stages - 1 if config.deep_supervision else 1
        self.loss = DeepSupervisionLoss(DiceCELoss(batch_dice=settings.batch_dice), deep_supervision_weights(n_outputs))
        self.iteration = 0
        self.method = method_class(self)
        self.method_modules = torch.nn.ModuleDict(self.method.modules()).to(self.device)
        if self.world_size > 1:
            self.model = torch.nn.parallel.DistributedDataParallel(
                self.network, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=has_unused_parameters(config, self.loss))
        self.optimizer = torch.optim.SGD(parameter_groups(self.named_parameters(), settings.weight_decay), lr=self.lr,
                                         momentum=settings.momentum, nesterov=True, weight_decay=settings.weight_decay)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.device.type == "cuda")
        self.start_epoch, self.best_dice = 0, -1.0
        self.batches = TrainingBatches(settings, config.patch_size, batch_size, self.device, self.memory_format,
                                       self.network, self.grid_spacing)

    def parameters(self) -> list[torch.nn.Parameter]:
        """What the optimiser trains: the network and the method's own modules."""
        return list(self.network.parameters()) + list(self.method_modules.parameters())

    def named_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        """``parameters()`` with their names (``network.`` / ``method.`` prefixes), in the same order."""
        return ([(f"network.{n}", p) for n, p in self.network.named_parameters()]
                + [(f"method.{n}", p) for n, p in self.method_modules.named_parameters()])

    @property
    def total_iterations(self) -> int:
        return self.settings.epochs * self.settings.iterations_per_epoch

    # -- state -------------------------------------------------------------------------------------
    def resume(self) -> bool:
        """Load ``last.safetensors`` if present; True when a run was resumed."""
        path = self.out_dir / "last.safetensors"
        if not path.exists():
            return False
        header, state, optim_state = load_checkpoint(path)
        method = header.get("method", {})
        saved = method.get("name", "supervised")
        if saved != self.settings.method:
            raise ValueError(f"{path} was trained with --method {saved}, not {self.settings.method}")
        problem = resume_mismatch(header, self.config.to_dict(), self.settings.seed)
        if problem:
            raise ValueError(f"{self.out_dir} {problem}; resume with the same options or train into a new folder")
        try:
            self.network.load_state_dict(state, strict=True)
        except RuntimeError as err:        # same config but other weights: a damaged or foreign checkpoint
            raise ValueError(f"{path}: its weights do not fit its network config ({str(err).splitlines()[0]})") from None
        tensors = load_method_tensors(path)
        self.method_modules.load_state_dict({k[len("modules."):]: v for k, v in tensors.items()
                                             if k.startswith("modules.")}, strict=True)
        self.method.load_state({k[len("state."):]: v.to(self.device) for k, v in tensors.items()
                                if k.startswith("state.")}, method.get("info", {}))
        if optim_state is not None:
            try:
                self.optimizer.load_state_dict(optim_state)
            except ValueError as err:    # e.g. saved before Mamba's A_log and D got their own no-decay group
                raise ValueError(f"{path}: its optimizer state does not fit this version's optimizer ({err}); "
                                 "train into a new folder") from None
        if header.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(header["scaler"])
        training = header.get("training", {})
        self.start_epoch, self.best_dice = training.get("epoch", 0), training.get("best_dice", -1.0)
        self.iteration = self.start_epoch * self.settings.iterations_per_epoch
        return True

    def init_weights(self, path: Path) -> None:
        """Start from the network weights of another run's checkpoint (``--init-from``: fine-tuning); its optimiser,
        epoch and method state are not taken. The network config must be the same."""
        header, state, _ = load_checkpoint(path)
        saved = header.get("network", {})
        mine = self.config.to_dict()
        different = sorted(k for k in set(saved) | set(mine) if saved.get(k) != mine.get(k))
        if different:
            raise ValueError(f"--init-from {path}: its network differs from this run's in {', '.join(different)}; "
                             "plan this run with the same network, features, spacing and patch")
        self.network.load_state_dict(state, strict=True)

    def _save(self, name: str, epoch: int) -> None:
        if self.rank != 0:
            return
        meta = {**self.meta, "training": {"epoch": epoch, "best_dice": self.best_dice,
                                          "settings": asdict(self.settings), "batch_size": self.batch_size}}
        extra = None
        if name == "last.safetensors":
            tensors, info = self.method.state()
            extra = {**{f"modules.{k}": v for k, v in self.method_modules.state_dict().items()},
                     **{f"state.{k}": v for k, v in tensors.items()}}
            meta["method"] = {"name": self.settings.method, "info": info}
            if self.scaler.is_enabled():       # AMP's loss scale and growth tracker: exact resume on CUDA too
                meta["scaler"] = self.scaler.state_dict()
        save_checkpoint(self.out_dir / name, self.network, self.config, meta,
                        self.optimizer if name == "last.safetensors" else None, extra_tensors=extra)

    # -- loop --------------------------------------------------------------------------------------
    def learning_rate(self, epoch: int) -> float:
        return self.lr * (1 - epoch / self.settings.epochs) ** 0.9

    def fit(self, progress: bool = True) -> list[dict]:
        """Train from ``start_epoch`` to ``settings.epochs``; returns the rows of the epoch log. ``progress`` shows the
        iterations' bar; one line per epoch is printed either way."""
        from tqdm import tqdm

        progress = progress and self.rank == 0
        board = None
        if self.rank == 0:
            from torch.utils.tensorboard import SummaryWriter

            self.out_dir.mkdir(parents=True, exist_ok=True)
            board = SummaryWriter(str(self.out_dir / "tensorboard"))
        rows = []
        for epoch in range(self.start_epoch, self.settings.epochs):
            started = time.perf_counter()
            for group in self.optimizer.param_groups:
                group["lr"] = self.learning_rate(epoch)
            self.method.begin_epoch(epoch, self._epoch_randomness(epoch))
            self.model.train()
            self.method_modules.train()
            losses, scalars = [], {}
            bar = tqdm(range(self.settings.iterations_per_epoch), desc=f"epoch {epoch + 1}/{self.settings.epochs}",
                       unit="it", disable=not progress, leave=False)
            for index in bar:
                loss, step_scalars = self._step(epoch, index)
                losses.append(loss)
                for key, value in step_scalars.items():
                    scalars.setdefault(key, []).append(value)
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
            method_scalars = {key: float(np.nanmean(values)) for key, values in scalars.items()}
            method_scalars.update(self.method.end_epoch(epoch))
            row = {"epoch": epoch + 1, "lr": self.learning_rate(epoch), "train_loss": float(np.mean(losses)),
                   "val_dice": math.nan, "seconds": 0.0}
            due = self.settings.validate_every > 0 and ((epoch + 1) % self.settings.validate_every == 0
                                                       or epoch + 1 == self.settings.epochs)
            if self.val_cases and due and self.rank == 0:
                row["val_dice"] = self.validate()
                if row["val_dice"] > self.best_dice:
                    self.best_dice = row["val_dice"]
                    self._save("best.safetensors", epoch + 1)
            row["seconds"] = time.perf_counter() - started
            self._save("last.safetensors", epoch + 1)
            if board is not None:
                self._log(row)
                for key in ("train_loss", "lr", "val_dice"):
                    if not math.isnan(row[key]):
                        board.add_scalar(key, row[key], epoch + 1)
                for key, value in method_scalars.items():
                    if not math.isnan(value):
                        board.add_scalar(f"{self.settings.method}/{key}", value, epoch + 1)
                board.flush()
            if self.world_size > 1:
                torch.distributed.barrier()
            rows.append(row)
            if self.rank == 0:          # the epoch line is the log, kept under --progress none too
                validated = "" if math.isnan(row["val_dice"]) else f", val Dice {row['val_dice']:.4f}"
                print(f"epoch {epoch + 1}: loss {row['train_loss']:.4f}{validated}, {row['seconds']:.1f} s", flush=True)
        if board is not None:
            board.close()
        return rows

    def _epoch_randomness(self, epoch: int) -> int:
        """Seed torch, the augmentation and the prior perturbation for this epoch; returns the seed the method's
        samplers derive theirs from."""
        seed = (self.settings.seed * 100_003 + epoch) * 1_009 + self.rank
        torch.manual_seed(seed)
        self.batches.reseed(seed)
        return seed

    def _step(self, epoch: int = 0, index: int = 0) -> tuple[float, dict[str, float]]:
        self.optimizer.zero_grad(set_to_none=True)
        self.batches.drawn = []
        with torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
            loss, scalars = self.method.loss()
        self._check_finite_loss(loss, epoch, index)
        self.scaler.scale(loss).backward()
        if self.world_size > 1:
            self._average_method_gradients()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.parameters(), self.settings.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.iteration += 1
        self.method.after_step()
        return float(loss.detach()), scalars

    def _check_finite_loss(self, loss: torch.Tensor, epoch: int, index: int) -> None:
        """Stop before a NaN/Inf loss reaches the weights (every process agrees, so none waits for the others)."""
        finite = torch.isfinite(loss.detach()).all().to(torch.int32).reshape(1)
        if self.world_size > 1:
            torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
        if not bool(finite.item()):
            kept = f"last.safetensors holds epoch {epoch}" if epoch else "no checkpoint was written"
            raise NonFiniteLossError(
                f"non-finite loss at epoch {epoch + 1} iteration {index + 1}: {float(loss.detach()):g} "
                f"(in {self.out_dir}; {kept}); {self._batch_report()}look for NaN/Inf voxels or extreme values in "
                "the training images, or lower --lr")

    def _batch_report(self) -> str:
        """Which cases this process's batch came from, and which of them hold NaN/Inf in their (cached) data: where
        to look first, among hundreds of cases, when the loss turns NaN."""
        names = list(dict.fromkeys(self.batches.drawn))
        if not names:
            return ""
        report = f"the batch held case(s) {', '.join(names)}; "
        cases = {case.name: case for case in [*self.unlabeled_cases, *self.train_cases]}
        for name in names:
            bad = nonfinite_count(cases[name].data) if name in cases else 0
            if bad and cases[name].source:
                report += (f"the preprocessed cache of {name}, {cases[name].source}, holds {bad} NaN/Inf values: "
                           "delete that file and run again to preprocess it anew; ")
            elif bad:
                report += f"the preprocessed data of {name} holds {bad} NaN/Inf values; "
        return report

    def _average_method_gradients(self) -> None:
        """The method's own modules (Diff-CL's denoiser and projection head) run outside DistributedDataParallel,
        so their gradients are averaged over the processes here, in one bucket (flattened, one all_reduce,
        unflattened); every process then takes the same step."""
        from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

        parameters = [p for p in self.method_modules.parameters() if p.requires_grad]
        if not parameters:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
        bucket = _flatten_dense_tensors(grads)
        torch.distributed.all_reduce(bucket)
        bucket /= self.world_size
        for parameter, grad in zip(parameters, _unflatten_dense_tensors(bucket, grads)):
            parameter.grad = grad

    @property
    def grid_spacing(self) -> list[float]:
        """The training grid's voxel size in mm (the plan's target spacing; 1 mm without a plan)."""
        return list(self.meta.get("plan", {}).get("target_spacing", [1.0] * self.config.spatial_dims))

    def validate(self) -> float:
        """Mean foreground Dice over validation cases (whole volumes, Gaussian sliding window); for a correction
        model, the Dice after three simulated clicks from an empty mask (``correction.session``)."""
        from ..inference.sliding_window import sliding_window_logits

        if self.validator is not None:
            return float(self.validator(self.network, self.device))
        if self.settings.task == "correction":
            from ..correction.corrector import correct_on_grid
            from ..correction.session import simulate_session

            def correct(case):
                return lambda mask, clicks: correct_on_grid([self.network], case.data, mask, clicks, self.grid_spacing,
                                                            self.config.patch_size, self.device)

            return float(np.mean([simulate_session(correct(case), case.label > 0, np.zeros(case.label.shape, bool),
                                                   self.grid_spacing, 3)[-1] for case in self.val_cases]))
        scores = []
        for case in self.val_cases:
            prediction = sliding_window_logits(self.network, case.data, self.config.patch_size,
                                               self.settings.sw_overlap, self.device).argmax(0).numpy()
            for value in range(1, self.config.num_classes):
                pred, ref = prediction == value, case.label == value
                total = pred.sum() + ref.sum()
                scores.append(1.0 if total == 0 else 2.0 * np.logical_and(pred, ref).sum() / total)
        return float(np.mean(scores))

    def _log(self, row: dict) -> None:
        """One row per epoch; a value not measured in that epoch (validation between validations) is an empty cell,
        which spreadsheets and ``csv`` readers take as missing, not the string ``nan``."""
        row = {key: "" if isinstance(value, float) and math.isnan(value) else value for key, value in row.items()}
        path = self.out_dir / "log.csv"
        new = not path.exists()
        with path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)


def resume_mismatch(header: dict, config: dict, seed: int) -> Optional[str]:
    """Why a run with checkpoint ``header`` cannot be resumed with network ``config`` and ``seed`` (None: it can)."""
    saved = header.get("network", {})
    if saved != config:
        keys = sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
        return (f"was trained with network {saved.get('network')} features {saved.get('features_per_stage')}, not "
                f"{config.get('network')} features {config.get('features_per_stage')} (differing: {', '.join(keys)})")
    trained_seed = header.get("training", {}).get("settings", {}).get("seed")
    if trained_seed is not None and trained_seed != seed:
        return f"was trained with --seed {trained_seed}, not --seed {seed}"
    return None


def has_unused_parameters(config: NetworkConfig, loss: DeepSupervisionLoss) -> bool:
    """Whether some network parameter gets no gradient in a training step, which DistributedDataParallel must then
    search for (``find_unused_parameters``, an extra graph traversal every step; without it the step fails).
    The decoder's heads are all evaluated with deep supervision, but a level whose loss weight is 0 (the lowest, as
    in nnU-Net) never reaches the loss; without deep supervision only the full-resolution head is evaluated."""
    if not config.deep_supervision:
        return config.n_stages > 2
    return any(weight == 0 for weight in loss.weights)


def parameter_groups(named: Sequence[tuple[str, torch.nn.Parameter]], weight_decay: float) -> list[dict]:
    """Optimiser groups: parameters flagged ``_no_weight_decay`` (Mamba's A_log and D, as mamba_ssm marks them)
    get no weight decay; every other parameter gets ``weight_decay`` (nnU-Net decays biases and norms too)."""
    decay, no_decay = [], []
    for _, parameter in named:
        if not parameter.requires_grad:
            continue
        (no_decay if getattr(parameter, "_no_weight_decay", False) else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def hide_label(case: TrainingCase) -> TrainingCase:
    """An unlabelled case: its label is replaced by zeros, so no code path can learn from it."""
    return TrainingCase(case.name, case.data, np.zeros_like(case.label), {}, case.source)


def _init_distributed(device: torch.device) -> tuple[int, int]:
    """(world size, rank); joins the process group when started by torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if world_size > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return world_size, (torch.distributed.get_rank() if world_size > 1 else 0)
