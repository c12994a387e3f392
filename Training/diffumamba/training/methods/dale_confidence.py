"""DALE's label confidence by loss consistency, and the width of the fuzzy band from the data.

The paper's method text is not public beyond its abstract ("a loss consistency-based collaborative optimization
... label confidence parameters ... dynamically adjust the influence of labels of different confidence levels")
and one summary's "adaptively weight labels via omega_t*". Our reading (docs/methods.md, [our design]):

A label is trusted as far as what it costs is *consistent* with what reliable labels cost, judged by two networks
and over time, not by one network at one step. A teacher trained on the same noisy labels memorises their
errors, so its probability of the label (the earlier estimate, kept as ``--dale-confidence teacher``) rises to 1
on exactly the voxels it should doubt. The loss history does not: before a network memorises a wrong contour, the
wrong side of that contour costs more than reliable boundaries cost, and the history keeps that record.

- d(v): the per-voxel cross-entropy of the given label under the student and under the EMA teacher, averaged
  (agreement between networks);
- H(c, s, r): the mean of d over the fuzzy voxels of case c on side s of its label (inside / outside) at distance r
  from its border (r = 1 .. 8, and beyond), over every step since warm-up (agreement over time). An outward-grown
  contour shows as high inside histories in its outer rings, a shrunk one as high outside histories, a shifted one
  as both. Sides and rings come from the (augmented) label of each patch itself, so no voxel coordinates are
  needed and spatial augmentation changes nothing;
- R(s, r): the same mean over the current stable cases: what a reliable boundary costs there (the two sides of a
  correct contour do not cost the same: a network that still under-segments pays more inside);
- omega_t*(v) = argmin over omega in [floor, 1] of  omega * e(v) + gamma * (omega log omega - omega),
  with e(v) = max(0, (d(v) + H(c, s, r)) / 2 - R(s, r)) the voxel's excess cost: omega = clip(exp(-e / gamma),
  floor, 1). The entropy term keeps the weights soft (a hard 0/1 threshold is the gamma -> 0 limit), gamma =
  ``--dale-confidence-temperature``.
"""

from __future__ import annotations

import numpy as np
import torch

from ..distributed import gather_rows
from .dale_losses import dilate

__all__ = ["LossHistory", "border_distance", "voxel_label_loss", "loss_consistency_confidence",
           "band_radius_from_errors"]

INSIDE, OUTSIDE = 0, 1
RINGS = 8                   # distances 1 .. RINGS from the border are told apart; farther voxels share one ring


def border_distance(labels: torch.Tensor, largest: int = RINGS) -> torch.Tensor:
    """Each voxel's distance in voxels (the cube metric) to the border of the lesion (label > 0): 1 for the voxels
    either side of it, up to ``largest``, and ``largest`` + 1 beyond. (B, 1, *S) -> (B, *S) long. Grown one voxel at
    a time (3-wide pooling), which costs far less than pooling with wide kernels."""
    lesion = labels[:, 0] > 0
    distance = torch.full(lesion.shape, largest + 1, dtype=torch.long, device=labels.device)
    grown, shrunk = lesion, lesion
    for radius in range(1, largest + 1):
        grown_next, shrunk_next = dilate(grown, 1), ~dilate(~shrunk, 1)
        distance[(grown_next & ~grown) | (shrunk & ~shrunk_next)] = radius
        grown, shrunk = grown_next, shrunk_next
    return distance


def voxel_label_loss(student_logits: torch.Tensor, teacher_probabilities: torch.Tensor,
                     labels: torch.Tensor) -> torch.Tensor:
    """d(v): the mean of the student's and the teacher's cross-entropy of the given label, no gradient.
    (B, K, *S) logits, (B, K, *S) probabilities, (B, 1, *S) labels -> (B, *S)."""
    with torch.no_grad():
        given = labels.long()
        student = -torch.log_softmax(student_logits.float(), 1).gather(1, given)[:, 0]
        teacher = -teacher_probabilities.float().gather(1, given)[:, 0].clamp_min(1e-8).log()
        return 0.5 * (student + teacher)


def _regions(labels: torch.Tensor) -> torch.Tensor:
    """Each voxel's region index side * (RINGS + 1) + ring - 1. (B, 1, *S) -> (B, *S) long."""
    side = (labels[:, 0] <= 0).long()                  # INSIDE 0, OUTSIDE 1
    return side * (RINGS + 1) + border_distance(labels) - 1


class LossHistory:
    """Per training case, side of its label and distance ring, the running sum and count of d over fuzzy voxels
    since warm-up. Float64 sums, so the means do not drift over a long run; every process adds every process's
    sums, so all hold the same history."""

    def __init__(self, n_cases: int, device=None):
        self.sums = torch.zeros(n_cases, 2 * (RINGS + 1), dtype=torch.float64, device=device)
        self.counts = torch.zeros_like(self.sums)

    @torch.no_grad()
    def observe(self, case_indices: torch.Tensor, loss: torch.Tensor, fuzzy: torch.Tensor,
                labels: torch.Tensor) -> None:
        """Add each sample's fuzzy-voxel losses to its case's regions. case_indices (B,), loss and fuzzy (B, *S),
        labels (B, 1, *S)."""
        regions = _regions(labels).flatten(1)
        weight = fuzzy.flatten(1).double()
        n = self.sums.shape[1]
        sums = torch.zeros(len(loss), n, dtype=torch.float64, device=loss.device)
        counts = torch.zeros_like(sums)
        sums.scatter_add_(1, regions, loss.flatten(1).double() * weight)
        counts.scatter_add_(1, regions, weight)
        cases, sums, counts = gather_rows(case_indices.to(loss.device), sums, counts)
        self.sums.index_add_(0, cases.to(self.sums.device), sums.to(self.sums.device))
        self.counts.index_add_(0, cases.to(self.sums.device), counts.to(self.sums.device))

    def means(self) -> torch.Tensor:
        """(cases, regions) mean d; NaN where nothing was observed yet."""
        return torch.where(self.counts > 0, self.sums / self.counts.clamp_min(1), torch.full_like(self.sums, np.nan))

    def reference(self, stable_cases: list[int]) -> torch.Tensor:
        """R per region: the mean d of the stable cases' voxels there, (regions,) (NaN where none was observed)."""
        if not stable_cases:
            return torch.full((self.sums.shape[1],), float("nan"), dtype=torch.float64)
        index = torch.as_tensor(stable_cases, device=self.sums.device)
        sums, counts = self.sums[index].sum(0).cpu(), self.counts[index].sum(0).cpu()
        return torch.where(counts > 0, sums / counts.clamp_min(1), torch.full_like(sums, float("nan")))

    def state(self) -> dict[str, torch.Tensor]:
        return {"sums": self.sums, "counts": self.counts}

    def load(self, state: dict[str, torch.Tensor]) -> None:
        if "sums" in state:
            self.sums, self.counts = state["sums"].clone().double(), state["counts"].clone().double()


def loss_consistency_confidence(loss: torch.Tensor, history: torch.Tensor, labels: torch.Tensor,
                                reference: torch.Tensor, temperature: float, floor: float) -> torch.Tensor:
    """omega(v) = clip(exp(-max(0, (d(v) + H(c, s, r)) / 2 - R(s, r)) / gamma), floor, 1).
    loss (B, *S) = d, history (B, regions) = each sample's case's ``LossHistory.means`` row (NaN: no history yet,
    the voxel's own loss stands in), labels (B, 1, *S), reference (regions,) = R. A region with no stable
    boundary observed yet (R NaN) keeps weight 1: nothing to be consistent with yet."""
    regions = _regions(labels)
    flat = regions.flatten(1)
    own = history.to(loss).gather(1, flat).view_as(loss)
    own = torch.where(torch.isnan(own), loss, own)
    stable = reference.to(loss)[regions]
    excess = (0.5 * (loss + own) - stable).clamp_min(0)
    omega = torch.exp(-excess / temperature).clamp(min=floor, max=1.0)
    return torch.where(torch.isnan(stable), torch.ones_like(omega), omega)


@torch.no_grad()
def band_radius_from_errors(labels: torch.Tensor, prediction: torch.Tensor, largest: int = RINGS) -> int | None:
    """The band half-width the data call for: the teacher's error rate in each ring of voxels at distance r = 1 ..
    ``largest`` from the label's border (a cube metric, both sides) is high where contours are disputed and falls
    to a floor beyond; the width is the last ring whose rate is still a twentieth of the way from the floor (the
    outermost ring's rate) to the peak, between 1 and ``largest`` - 1 (a twentieth, not half: a contour grown along
    the axes is a shell whose depth tapers at its diagonals, and the band must hold the whole shell). None when the
    profile has no such fall (a teacher that errs everywhere, or nowhere): nothing to learn a width from.
    labels (B, 1, *S), prediction (B, *S)."""
    wrong = prediction != labels[:, 0]
    distance = border_distance(labels, largest)
    rates = np.array([float(wrong[distance == r].float().mean()) if (distance == r).any() else 0.0
                      for r in range(1, largest + 1)])
    floor, peak = rates[-1], rates.max()
    if peak - floor < 0.1:
        return None
    above = np.nonzero(rates > floor + 0.05 * (peak - floor))[0]
    return int(np.clip(above.max() + 1, 1, largest - 1))
