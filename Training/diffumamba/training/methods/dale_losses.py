"""DALE's pieces, each a small function of tensors (see docs/methods.md for which parts the paper states and
which are our design): the boundary band, predictive entropy, per-voxel label confidence, the confidence-
weighted Dice + CE, the stable class-conditional feature memory, the Wasserstein alignment loss and the soft
fuzzy/stable partition of the training cases."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["dilate", "boundary_band", "normalised_entropy", "label_confidence", "weighted_dice_ce", "ClassStatistics",
           "gaussian_w2", "alignment_loss", "soft_partition"]


def _pool(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Max over the cube of half-width ``radius``, as ``radius`` passes of a 3-wide max: the same result (a cube
    is the sum of unit cubes), at 27 r instead of (2 r + 1)^3 comparisons per voxel (a band of 7 cost 18 times
    more with one wide pooling, and DALE computes bands every step)."""
    pool = F.max_pool3d if x.dim() == 5 else F.max_pool2d
    for _ in range(radius):
        x = pool(x, kernel_size=3, stride=1, padding=1)
    return x


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """(B, *S) bool mask grown by ``radius`` voxels (a cube)."""
    return _pool(mask[:, None].float(), radius)[:, 0] > 0


def boundary_band(labels: torch.Tensor, radius: int) -> torch.Tensor:
    """Voxels within ``radius`` of the label's border: ``dilate(y) XOR erode(y)`` per foreground class.
    labels (B, 1, *S) integer -> (B, *S) bool. Where annotators disagree, this is where they do."""
    band = torch.zeros_like(labels[:, 0], dtype=torch.bool)
    for value in labels.unique():
        if value == 0:
            continue
        mask = (labels == value).float()
        dilated = _pool(mask, radius) > 0
        eroded = _pool(1 - mask, radius) == 0
        band |= (dilated & ~eroded)[:, 0]
    return band


def normalised_entropy(probabilities: torch.Tensor) -> torch.Tensor:
    """(B, K, *S) -> (B, *S) entropy divided by log K (0: certain, 1: uniform)."""
    k = probabilities.shape[1]
    entropy = -(probabilities * probabilities.clamp_min(1e-8).log()).sum(1)
    return entropy / float(np.log(k))


def label_confidence(teacher_probabilities: torch.Tensor, labels: torch.Tensor, floor: float) -> torch.Tensor:
    """omega(v) = clip(p_teacher(y(v) | x), floor, 1): how much the (EMA) model believes the given label.
    (B, K, *S), (B, 1, *S) -> (B, *S)."""
    given = teacher_probabilities.gather(1, labels.long()).squeeze(1)
    return given.clamp(min=floor, max=1.0)


def weighted_dice_ce(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor, batch_dice: bool = False,
                     smooth: float = 1e-5) -> torch.Tensor:
    """Cross-entropy averaged with voxel weights plus soft Dice over the foreground classes whose intersection and
    sums are weighted: a voxel of weight w counts as w voxels. The Dice is per sample then averaged, or pooled over
    the batch with ``batch_dice``, exactly as ``DiceCELoss`` (the warm-up and stable phases' loss) computes it, so
    with every weight 1 the fuzzy phase's loss is the same function (tested); only the weights differ.
    logits (B, K, *S), labels (B, 1, *S), weight (B, *S) -> scalar."""
    logits = logits.float()
    target = labels[:, 0].long()
    ce = (F.cross_entropy(logits, target, reduction="none") * weight).sum() / weight.sum().clamp_min(1e-8)
    probabilities = torch.softmax(logits, 1)[:, 1:]
    onehot = F.one_hot(target, logits.shape[1]).movedim(-1, 1)[:, 1:].float()
    w = weight.unsqueeze(1)
    dims = ([0] if batch_dice else []) + list(range(2, logits.dim()))
    intersection = (w * probabilities * onehot).sum(dims)
    denominator = (w * probabilities).sum(dims) + (w * onehot).sum(dims)
    dice = (2 * intersection + smooth) / (denominator + smooth)
    return ce + (1 - dice).mean()


class ClassStatistics:
    """Per-class mean and standard deviation (diagonal) of stable voxels' features, kept as an EMA memory with no
    gradient: the target distribution fuzzy-region features are pulled towards."""

    def __init__(self, n_classes: int, dim: int, momentum: float = 0.99, device=None):
        self.momentum = momentum
        self.mean = torch.zeros(n_classes, dim, device=device)
        self.std = torch.ones(n_classes, dim, device=device)
        self.seen = torch.zeros(n_classes, dtype=torch.bool, device=device)

    @torch.no_grad()
    def update(self, features: torch.Tensor, classes: torch.Tensor, minimum: int = 8) -> None:
        """features (N, D), classes (N,): classes with at least ``minimum`` voxels update their entry (the first
        batch of a class sets it)."""
        for c in range(self.mean.shape[0]):
            chosen = features[classes == c].float()
            if len(chosen) < minimum:
                continue
            mean, std = chosen.mean(0), chosen.std(0)
            if self.seen[c]:
                self.mean[c].mul_(self.momentum).add_(mean, alpha=1 - self.momentum)
                self.std[c].mul_(self.momentum).add_(std, alpha=1 - self.momentum)
            else:
                self.mean[c], self.std[c], self.seen[c] = mean, std, True

    def state(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean, "std": self.std, "seen": self.seen}

    def load(self, state: dict[str, torch.Tensor]) -> None:
        self.mean, self.std, self.seen = state["mean"].clone(), state["std"].clone(), state["seen"].clone()


def gaussian_w2(mean_a: torch.Tensor, std_a: torch.Tensor, mean_b: torch.Tensor, std_b: torch.Tensor,
                scale: torch.Tensor | None = None) -> torch.Tensor:
    """Squared 2-Wasserstein distance between diagonal Gaussians, per dimension:
    mean((mu_a - mu_b)^2 + (sigma_a - sigma_b)^2), divided by mean(scale^2) when ``scale`` is given. With the
    target's sigmas as ``scale`` its size does not depend on the features' scale or the network's width (raw
    decoder features gave 30-80, which swamped the segmentation loss). The divisor is the *mean* variance, not
    each dimension's: a nearly constant feature (a dead unit) would otherwise blow the distance up (it reached
    500 in a real run and wrecked the network)."""
    squared = ((mean_a - mean_b) ** 2 + (std_a - std_b) ** 2).mean()
    if scale is not None:
        squared = squared / (scale ** 2).mean().clamp_min(1e-6)
    return squared


def alignment_loss(features: torch.Tensor, classes: torch.Tensor, memory: ClassStatistics,
                   minimum: int = 8) -> torch.Tensor:
    """Sum over classes of the W2 distance between the fuzzy voxels' feature Gaussian and the stable memory's,
    relative to the stable class's mean feature variance. features (N, D) with gradient, classes (N,). Zero when no class
    has ``minimum`` voxels and a memory entry."""
    total = features.new_zeros(())
    for c in range(memory.mean.shape[0]):
        chosen = features[classes == c].float()
        if len(chosen) < minimum or not memory.seen[c]:
            continue
        total = total + gaussian_w2(chosen.mean(0), chosen.std(0), memory.mean[c], memory.std[c], memory.std[c])
    return total


def soft_partition(average_entropy: np.ndarray, error_rate: np.ndarray, quantile: float = 0.7,
                   temperature: float = 0.1) -> np.ndarray:
    """Fuzzy membership phi of each case: s = (z(AE) + z(ER)) / 2, phi = sigmoid((s - tau) / T) with tau the
    ``quantile`` of s and T = ``temperature`` x std(s). phi >= 0.5 is the fuzzy set."""
    def z(values):
        values = np.asarray(values, float)
        spread = values.std()
        return (values - values.mean()) / spread if spread > 0 else np.zeros_like(values)

    score = 0.5 * z(average_entropy) + 0.5 * z(error_rate)
    tau = np.quantile(score, quantile)
    scale = max(temperature * score.std(), 1e-6)
    return 1 / (1 + np.exp(-np.clip((score - tau) / scale, -50, 50)))
