"""Self-describing, safe checkpoints: one ``.safetensors`` file with a JSON header.

The file holds the network weights (and, for resuming, the optimizer's tensors) as safetensors, which
stores raw arrays and cannot run code when loaded. Its metadata holds one JSON document: the network
config (to rebuild the model without code changes), the plan, label names, intensity statistics and
training provenance (dataset fingerprint hash, code and package versions), plus the training state.
Pickled PyTorch files (``.pt``/``.pth``) are refused rather than unpickled: a pickle can execute
arbitrary code, and a clinician's workstation must never do that for a downloaded model.
"""

from __future__ import annotations

import json
import platform
import subprocess
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from . import __version__
from .data.plan_checks import validate_plan
from .files import atomic_write_bytes
from .nets import NetworkConfig, build_network

__all__ = ["FORMAT", "save_checkpoint", "checkpoint_bytes", "weights_only_bytes", "load_checkpoint",
           "load_checkpoint_bytes", "load_model", "provenance"]

FORMAT = "diffumamba-checkpoint/1"
_MODEL, _OPTIM, _METHOD = "model.", "optimizer.", "method."


def provenance() -> dict[str, Any]:
    """Code and package versions recorded in every checkpoint."""
    packages = {}
    for name in ("torch", "numpy", "monai", "SimpleITK", "mamba-ssm"):
        try:
            packages[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue  # not installed (e.g. mamba-ssm on a CPU machine): nothing to record
    return {"diffumamba": __version__, "git_commit": _git_commit(), "python": platform.python_version(),
            "packages": packages}


def _git_commit() -> Optional[str]:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def save_checkpoint(path: str | Path, model: nn.Module, config: NetworkConfig, meta: dict[str, Any],
                    optimizer: Optional[torch.optim.Optimizer] = None,
                    extra_tensors: Optional[dict[str, torch.Tensor]] = None) -> None:
    """Write weights, the network config, ``meta`` (plan, labels, training state, ...) and provenance.

    With ``optimizer`` its state is included so that training can resume exactly; ``extra_tensors`` (a training
    method's modules and state) are stored beside the weights, which ``load_model`` ignores.
    """
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    tensors = {_MODEL + k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tensors.update({_METHOD + k: v.detach().contiguous().cpu() for k, v in (extra_tensors or {}).items()})
    header = {"format": FORMAT, "network": config.to_dict(), "provenance": provenance(), **meta}
    atomic_write_bytes(path, checkpoint_bytes(tensors, header, optimizer))


def checkpoint_bytes(tensors: dict[str, torch.Tensor], header: dict[str, Any],
                     optimizer: Optional[torch.optim.Optimizer] = None) -> bytes:
    """The safetensors file of ``tensors`` (already prefixed ``model.``/``method.``), ``header`` and the optimizer."""
    from safetensors.torch import save

    tensors, header = dict(tensors), dict(header)
    if optimizer is not None:
        state = optimizer.state_dict()
        scalars = {}
        for index, entries in state["state"].items():
            for key, value in entries.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"{_OPTIM}{index}.{key}"] = value.detach().contiguous().cpu()
                else:
                    scalars[f"{index}.{key}"] = value
        header["optimizer"] = {"param_groups": state["param_groups"], "scalars": scalars}
    return save(tensors, metadata={"diffumamba": json.dumps(header)})


def weights_only_bytes(header: dict[str, Any], model_state: dict[str, torch.Tensor]) -> bytes:
    """A checkpoint of the weights and header alone (no optimizer, no method state): what a model package ships."""
    header = {k: v for k, v in header.items() if k != "optimizer"}
    return checkpoint_bytes({_MODEL + k: v.detach().contiguous().cpu() for k, v in model_state.items()}, header)


def load_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], Optional[dict]]:
    """(header, model state_dict, optimizer state_dict or None), without unpickling anything."""
    path = Path(path)
    return load_checkpoint_bytes(path.read_bytes(), path)


def load_checkpoint_bytes(raw: bytes, path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], Optional[dict]]:
    """``load_checkpoint`` of a file's content (e.g. a member of a model package); ``path`` names it in errors."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    pickled = raw[:1] == b"\x80" or raw[:2] == b"PK"     # a pickle (protocol 2+) or torch.save's zip
    if path.suffix in (".pt", ".pth", ".pkl", ".ckpt") or (pickled and not _safetensors_layout(raw)):
        raise ValueError(f"{path.name} is a pickled PyTorch file; DiffUMambaSeg never unpickles checkpoints "
                         "(a pickle can run arbitrary code). Use a .safetensors checkpoint written by diffumamba.")
    try:
        tensors = load(raw)
        header_length = int.from_bytes(raw[:8], "little")
        metadata = json.loads(raw[8:8 + header_length]).get("__metadata__", {})
    except (SafetensorError, ValueError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path.name} is not a readable safetensors file ({err})") from None
    if "diffumamba" not in metadata:
        raise ValueError(f"{path.name} has no diffumamba header: not a DiffUMambaSeg checkpoint")
    try:
        header = json.loads(metadata["diffumamba"])
    except (json.JSONDecodeError, TypeError) as err:
        raise ValueError(f"{path} has a corrupt diffumamba header ({err}): the file was damaged or edited; use "
                         "another copy of the checkpoint or train again") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        found = header.get("format") if isinstance(header, dict) else type(header).__name__
        raise ValueError(f"{path.name}: unsupported checkpoint format {found!r} (expected {FORMAT})")
    if "plan" in header:      # every reader of a checkpoint (predict, correct, serve, package, resume) gets this
        validate_plan(header["plan"], str(path), "its plan was edited or damaged; use an unaltered copy of the "
                      "model, or train it again")
    model_state = {k[len(_MODEL):]: v for k, v in tensors.items() if k.startswith(_MODEL)}
    optimizer_state = None
    if "optimizer" in header:
        state: dict[int, dict] = {}
        for key, value in tensors.items():
            if key.startswith(_OPTIM):
                index, name = key[len(_OPTIM):].split(".", 1)
                state.setdefault(int(index), {})[name] = value
        for key, value in header["optimizer"]["scalars"].items():
            index, name = key.split(".", 1)
            state.setdefault(int(index), {})[name] = value
        optimizer_state = {"state": state, "param_groups": header["optimizer"]["param_groups"]}
    return header, model_state, optimizer_state


def _safetensors_layout(raw: bytes) -> bool:
    """An 8-byte little-endian header length that fits the file, then a JSON object: a safetensors file, whatever
    its first byte (a header of 128 + 256k bytes starts with the byte a pickle starts with)."""
    if len(raw) < 10:
        return False
    length = int.from_bytes(raw[:8], "little")
    return 2 <= length <= len(raw) - 8 and raw[8:9] == b"{"


def load_method_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``extra_tensors`` saved with a checkpoint (weights only, no unpickling)."""
    from safetensors.torch import load

    return {k[len(_METHOD):]: v for k, v in load(Path(path).read_bytes()).items() if k.startswith(_METHOD)}


def load_model(path: str | Path, device: str | torch.device = "cpu",
               raw: Optional[bytes] = None) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network from the checkpoint's own config and load its weights (strictly).

    ``raw``: the checkpoint's bytes when it is not a file of its own (a model package member named ``path``)."""
    header, state, _ = load_checkpoint(path) if raw is None else load_checkpoint_bytes(raw, path)
    model = build_network(NetworkConfig.from_dict(header["network"]))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{Path(path).name}: weights do not match its network config: {err}") from None
    if "diffusion" in header:              # Diff-CL's diffusion branch: a segmenter by DDIM sampling
        from .nets.mask_diffusion import DiffusionSegmenter

        settings = header["diffusion"]
        model = DiffusionSegmenter(model, int(settings["n_classes"]), int(settings["timesteps"]),
                                   int(settings["sampling_steps"]))
    return model.to(device).eval(), header
