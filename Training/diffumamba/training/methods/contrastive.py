"""Contrastive label propagation (Diff-CL): embeddings of labelled voxels fill a per-class memory; confident
unlabelled voxels are pulled towards the memory of their pseudo-class and pushed from the others (InfoNCE), so
regions of unlabelled scans that resemble a class as the labelled scans show it are learned as that class."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


__all__ = ["ProjectionHead", "MemoryBank", "info_nce"]


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
