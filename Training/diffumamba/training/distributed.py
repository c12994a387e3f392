"""What the processes of one ``torchrun`` must agree on besides the weights DistributedDataParallel keeps equal:
the methods' memories (DALE's stable feature statistics, Diff-CL's embedding bank) and pseudo-label locations.
Each process contributes what it saw; every process then applies the same update, so all ranks hold the same
state and the one rank 0 saves is everybody's (an exact multi-GPU resume). Without a process group both helpers
are the identity."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["is_distributed", "gather_rows", "broadcast_object"]


def is_distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized() \
        and torch.distributed.get_world_size() > 1


def gather_rows(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Every process's rows, concatenated in rank order, on every process. The tensors of one call share their
    first dimension (e.g. features (N, D) and their classes (N,)); N may differ between processes."""
    if not is_distributed():
        return tensors
    world = torch.distributed.get_world_size()
    count = torch.tensor([len(tensors[0])], device=tensors[0].device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    torch.distributed.all_gather(counts, count)
    counts = [int(c) for c in counts]
    longest = max(counts)
    gathered = []
    for tensor in tensors:
        padded = tensor.new_zeros((longest, *tensor.shape[1:]))
        padded[:len(tensor)] = tensor
        parts = [torch.empty_like(padded) for _ in range(world)]
        torch.distributed.all_gather(parts, padded.contiguous())
        gathered.append(torch.cat([part[:n] for part, n in zip(parts, counts)]))
    return tuple(gathered)


def broadcast_object(value: Any) -> Any:
    """Rank 0's ``value`` on every process (a JSON-able or numpy object)."""
    if not is_distributed():
        return value
    holder = [value]
    torch.distributed.broadcast_object_list(holder, src=0)
    return holder[0]
