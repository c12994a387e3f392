"""``--device auto|cpu|cuda`` for every command, with one clear error when CUDA is asked for but absent."""

from __future__ import annotations

__all__ = ["resolve_device"]


def resolve_device(name: str):
    import torch

    if name not in ("auto", "cpu", "cuda") and not name.startswith("cuda:"):
        raise ValueError(f"unknown device {name!r}: use auto, cpu or cuda")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device is available")
    return torch.device(name)
