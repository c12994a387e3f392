"""Contrastive label propagation (Diff-CL): embeddings of labelled voxels fill a per-class memory; an unlabelled
voxel takes the class its nearest labelled embeddings vote for (``propagate_labels``), and where the vote is clear
it is pulled towards that class's memory and pushed from the others (InfoNCE) and the CNN's output is taught the
propagated class (``label_propagation_loss``): regions of unlabelled scans that resemble a class as the labelled
scans show it are learned as that class, whether or not the two branches already agree there. ``info_nce`` alone
on voxels both branches confidently agree on is the earlier, weaker variant (``--diffcl-contrastive agreement``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


__all__ = ["ProjectionHead", "MemoryBank", "info_nce", "propagate_labels", "label_propagation_loss"]


class ProjectionHead(nn.Module):
    """Linear -> ReLU -> Linear, L2-normalised: (N, C) voxel features -> (N, D) embeddings. A per-voxel (1x1)
    projection, applied only to the voxels that are sampled for the memory or as anchors."""

    def __init__(self, channels: int, dim: int = 64):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(channels, channels), nn.ReLU(inplace=True), nn.Linear(channels, dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.layers(features.float()), dim=1)


class MemoryBank:
    """A FIFO queue of ``size`` embeddings per class (no gradient)."""

    def __init__(self, n_classes: int, size: int, dim: int, device=None):
        self.embeddings = torch.zeros(n_classes, size, dim, device=device)
        self.filled = torch.zeros(n_classes, dtype=torch.long, device=device)
        self.position = torch.zeros(n_classes, dtype=torch.long, device=device)

    @torch.no_grad()
    def push(self, embeddings: torch.Tensor, classes: torch.Tensor) -> None:
        size = self.embeddings.shape[1]
        for c in range(self.embeddings.shape[0]):
            new = embeddings[classes == c][-size:]
            if not len(new):
                continue
            slots = (self.position[c] + torch.arange(len(new), device=new.device)) % size
            self.embeddings[c, slots] = new.float()
            self.position[c] = (self.position[c] + len(new)) % size
            self.filled[c] = min(size, int(self.filled[c]) + len(new))

    def keys(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(M, D) stored embeddings and their (M,) classes."""
        keys, classes = [], []
        for c in range(self.embeddings.shape[0]):
            n = int(self.filled[c])
            keys.append(self.embeddings[c, :n])
            classes.append(torch.full((n,), c, dtype=torch.long, device=self.embeddings.device))
        return torch.cat(keys), torch.cat(classes)

    def state(self) -> dict[str, torch.Tensor]:
        return {"embeddings": self.embeddings, "filled": self.filled, "position": self.position}

    def load(self, state: dict[str, torch.Tensor]) -> None:
        self.embeddings, self.filled, self.position = (state[k].clone() for k in ("embeddings", "filled", "position"))


def info_nce(anchors: torch.Tensor, classes: torch.Tensor, bank: MemoryBank, temperature: float) -> torch.Tensor:
    """-mean log( sum_{k in Q_c} exp(a.k / t) / sum_{k in Q} exp(a.k / t) ) over anchors whose class has keys;
    zero when there is nothing to contrast (an empty memory or no anchor)."""
    keys, key_classes = bank.keys()
    if not len(anchors) or not len(keys) or len(key_classes.unique()) < 2:
        return anchors.new_zeros(())
    logits = anchors.float() @ keys.T / temperature
    positive = key_classes[None, :] == classes[:, None]
    usable = positive.any(1)
    if not usable.any():
        return anchors.new_zeros(())
    logits, positive = logits[usable], positive[usable]
    positives = torch.logsumexp(logits.masked_fill(~positive, float("-inf")), 1)
    return (torch.logsumexp(logits, 1) - positives).mean()


@torch.no_grad()
def propagate_labels(embeddings: torch.Tensor, bank: MemoryBank, neighbours: int, temperature: float
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Each embedding's class by a similarity-weighted vote of its ``neighbours`` most similar labelled embeddings
    (weights exp(cos / t)), and the winning class's share of the vote. (N, D) -> (N,) classes, (N,) shares; shares
    of 0 when the memory is empty."""
    keys, key_classes = bank.keys()
    n_classes = bank.embeddings.shape[0]
    if not len(keys) or not len(embeddings):
        return (torch.zeros(len(embeddings), dtype=torch.long, device=embeddings.device),
                embeddings.new_zeros(len(embeddings)))
    similarity = embeddings.float() @ keys.T
    top, index = similarity.topk(min(neighbours, len(keys)), dim=1)
    weights = torch.softmax(top / temperature, dim=1)
    votes = torch.zeros(len(embeddings), n_classes, device=embeddings.device)
    votes.scatter_add_(1, key_classes[index], weights)
    share, classes = votes.max(1)
    return classes, share


def label_propagation_loss(embeddings: torch.Tensor, logits: torch.Tensor, bank: MemoryBank, temperature: float,
                           neighbours: int, confidence: float) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoNCE of the voxels whose propagated class has at least ``confidence`` of the vote, towards that class,
    plus the cross-entropy of the CNN's logits at those voxels against it: the propagated labels reach the
    segmentation, not only the embedding. embeddings (N, D) and logits (N, K) of the same voxels, both with
    gradient -> (loss, (N,) bool of the voxels used)."""
    classes, share = propagate_labels(embeddings.detach(), bank, neighbours, temperature)
    used = share >= confidence
    if not used.any():
        return embeddings.new_zeros(()) + 0 * logits.sum(), used
    contrast = info_nce(embeddings[used], classes[used], bank, temperature)
    return contrast + F.cross_entropy(logits[used].float(), classes[used]), used
