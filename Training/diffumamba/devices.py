"""``--device auto|cpu|cuda`` for every command, with one clear error when CUDA is asked for but absent."""

from __future__ import annotations

__all__ = ["resolve_device", "convolution_memory_format"]


def resolve_device(name: str):
    import torch

    if name not in ("auto", "cpu", "cuda") and not name.startswith("cuda:"):
        raise ValueError(f"unknown device {name!r}: use auto, cpu or cuda")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device is available")
    return torch.device(name)


def convolution_memory_format(device, spatial_dims: int):
    """The memory format 3D networks train fastest in on ``device``.

    On the CPU oneDNN's 3D convolutions, above all their backward pass, are about a third faster on channels-last
    tensors (``bench/memory_format.py``: a training step of the brain benchmark's ResUNet takes 0.70x the time
    on 2 cores); 2D networks are slower that way on the CPU, and CUDA is unmeasured, so both stay contiguous.
    """
    import torch

    if device.type == "cpu" and spatial_dims == 3:
        return torch.channels_last_3d
    return torch.contiguous_format
