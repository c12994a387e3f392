"""Drawing a bounded, class-balanced set of voxels from a batch (feature statistics, memories, anchors)."""

from __future__ import annotations

import torch

__all__ = ["sample_per_class"]


def sample_per_class(embeddings: torch.Tensor, classes: torch.Tensor, mask: torch.Tensor, per_class: int,
                     generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``per_class`` masked voxels of each class: embeddings (B, D, *S), classes and mask (B, *S) ->
    (N, D), (N,)."""
    flat, chosen = embeddings.movedim(1, -1)[mask], classes[mask]
    keep = []
    for c in chosen.unique():
        where = torch.nonzero(chosen == c).flatten()
        order = torch.randperm(len(where), generator=generator)[:per_class].to(where.device)
        keep.append(where[order])
    index = torch.cat(keep) if keep else torch.zeros(0, dtype=torch.long, device=embeddings.device)
    return flat[index], chosen[index]
