"""Read an nnU-Net v2 ``checkpoint_final.pth`` / ``checkpoint_best.pth`` without running the code a pickle can carry.

nnU-Net saves its checkpoints with ``torch.save`` (a pickle) and loads them with ``weights_only=False``, which would
run whatever a tampered file asks for. Here the file goes through ``torch.load(weights_only=True)``: PyTorch's
restricted unpickler builds only tensors, containers, plain Python values and the types allowed below, and refuses
anything else before it is called. The allow-list is what nnU-Net v2 itself puts in a checkpoint: numpy scalars
and their dtypes in the training log (``logging``, ``_best_ema``), under the module paths of numpy 1 and 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["UntrustedCheckpointError", "read_nnunet_checkpoint", "NNUNET_KEYS"]

NNUNET_KEYS = ("network_weights", "init_args", "trainer_name")


class UntrustedCheckpointError(ValueError):
    """The file holds something outside the allow-list (or is not an nnU-Net checkpoint); nothing of it ran."""


def _allowed_globals() -> list:
    import numpy as np

    scalar = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
    dtypes = [type(np.dtype(name)) for name in ("float16", "float32", "float64", "int32", "int64", "bool")]
    # numpy 1 pickles name numpy.core.*, numpy 2 numpy._core.*: allow the one function under both names.
    return [np.dtype, *dtypes, (scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar")]


def read_nnunet_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint's dict (tensors on the CPU), or a one-line error naming the file and what it held."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint (expected fold_N/checkpoint_final.pth of an nnU-Net "
                                "results folder)")
    try:
        with torch.serialization.safe_globals(_allowed_globals()):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # PyTorch's message is long; keep its first line of substance (which global was refused).
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        reason = next((line for line in lines if "GLOBAL" in line or "global" in line or "Can only build" in line),
                      lines[-1] if lines else "unpickling refused").rstrip(".")
        raise UntrustedCheckpointError(
            f"{path}: refused, nothing in it was run: it holds more than weights and plain values ({reason}). "
            "nnU-Net checkpoints hold only those; get the file from its authors again, or re-save its "
            "'network_weights' with torch.save on a machine you trust") from None
    except (RuntimeError, EOFError, OSError) as err:
        raise UntrustedCheckpointError(f"{path}: not a readable PyTorch checkpoint ({err}); the file may be "
                                       "truncated: download it again") from None
    if not isinstance(checkpoint, dict) or any(key not in checkpoint for key in NNUNET_KEYS):
        found = sorted(checkpoint)[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise UntrustedCheckpointError(f"{path}: not an nnU-Net v2 checkpoint (needs {', '.join(NNUNET_KEYS)}; "
                                       f"found {found})")
    return checkpoint
