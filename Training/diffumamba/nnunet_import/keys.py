"""Rename an official Diff-UMamba / U-Mamba Bot state dict onto our networks' parameter names.

The official networks and ours hold the same tensors (same shapes, same arithmetic); only names differ:

- a stage's first block (the official ``BasicResBlock``) names its 1x1 projection ``conv3``: ours ``shortcut``;
- later blocks are dynamic-network-architectures' ``BasicBlockD``, whose convolutions are ``ConvDropoutNormReLU``
  modules: ``conv1.conv``/``conv1.norm``/``conv2.conv``/``conv2.norm`` are our ``conv1``/``norm1``/``conv2``/``norm2``;
  their ``all_modules.N`` keys are a second name of the same tensors and are dropped;
- the decoder keeps a reference to the encoder, so every encoder tensor appears again as ``decoder.encoder.*``;
- Diff-UMamba's Noise Reduction Module lives at the top level (``mamba_m_1``, ``mamba_m_2``, ``proj_convs.i``,
  ``lambdas``); ours groups it under ``nrm.``. The first published version named the projections ``conv3d_1..5`` and
  the weights ``lambda_1..5`` (five scalars built from one tensor: tied, a single learnt value).

Duplicates are checked to be equal before they are dropped, so a file whose copies disagree is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

__all__ = ["MappedWeights", "map_official_state_dict", "official_network"]

_WRAPPERS = ("module.", "_orig_mod.")               # DistributedDataParallel and torch.compile prefixes
_BLOCK_D = re.compile(r"^(encoder\.stem|encoder\.stages\.\d+|decoder\.stages\.\d+)\.(\d+)\.conv([12])\.(conv|norm)\.(.+)$")
_FIRST_BLOCK_PROJECTION = re.compile(r"^(encoder\.stem|encoder\.stages\.\d+|decoder\.stages\.\d+)\.0\.conv3\.(.+)$")
_OLD_PROJECTION = re.compile(r"^conv3d_(\d+)\.(.+)$")
_OLD_LAMBDA = re.compile(r"^lambda_(\d+)$")


@dataclass
class MappedWeights:
    """Our state dict, the official network it came from, and what the user should know about the import."""

    state: dict[str, torch.Tensor]
    network: str
    notes: list[str] = field(default_factory=list)


def official_network(keys) -> str:
    """``diffumamba`` (an NRM: either version), ``umambabot`` (one bottleneck Mamba) or ``unknown``."""
    keys = {_strip(k) for k in keys}
    if any(k.startswith(("mamba_m_1.", "mamba_m_2.")) for k in keys):
        return "diffumamba"
    if any(k.startswith("mamba_layer.") for k in keys):
        return "umambabot"
    return "unknown"


def map_official_state_dict(official: dict[str, torch.Tensor], source: str = "the checkpoint") -> MappedWeights:
    """Our names for every tensor of an official UMambaBot / DiffUMamba state dict (either DiffUMamba version)."""
    network = official_network(official)
    if network == "unknown":
        raise ValueError(f"{source}: neither a Diff-UMamba (mamba_m_1, mamba_m_2) nor a U-Mamba Bot (mamba_layer) "
                         "network; import-nnunet reads only those two")
    state: dict[str, torch.Tensor] = {}
    aliases: dict[str, torch.Tensor] = {}
    old_lambdas: dict[int, torch.Tensor] = {}
    for raw_key, tensor in official.items():
        key = _strip(raw_key)
        if key.startswith("decoder.encoder."):
            aliases[key] = tensor
            continue
        if ".all_modules." in key:
            aliases[key] = tensor                  # ConvDropoutNormReLU's second name for its conv / norm
            continue
        if match := _OLD_LAMBDA.match(key):
            old_lambdas[int(match.group(1))] = tensor
            continue
        new = _rename(key, network)
        if new in state:
            raise ValueError(f"{source}: two official tensors map onto {new} ({raw_key} and an earlier one)")
        state[new] = tensor
    _check_aliases(state, aliases, source)
    notes = []
    if old_lambdas:
        state["nrm.lambdas"], note = _stack_old_lambdas(old_lambdas, source)
        notes.append(note)
    return MappedWeights(state, network, notes)


def _strip(key: str) -> str:
    for prefix in _WRAPPERS:
        while key.startswith(prefix):
            key = key[len(prefix):]
    return key


def _rename(key: str, network: str) -> str:
    if match := _FIRST_BLOCK_PROJECTION.match(key):
        return f"{match.group(1)}.0.shortcut.{match.group(2)}"
    if match := _BLOCK_D.match(key):
        where, block, index, kind, rest = match.groups()
        return f"{where}.{block}.{'conv' if kind == 'conv' else 'norm'}{index}.{rest}"
    if network == "diffumamba":
        if key.startswith(("mamba_m_1.", "mamba_m_2.", "proj_convs.")) or key == "lambdas":
            return "nrm." + key
        if match := _OLD_PROJECTION.match(key):
            return f"nrm.proj_convs.{int(match.group(1)) - 1}.{match.group(2)}"
    return key


def _check_aliases(state: dict, aliases: dict, source: str) -> None:
    """A second name must hold the very tensor of the first: ``decoder.encoder.*`` that of ``encoder.*`` (nnU-Net's
    decoder keeps the encoder), ``convN.all_modules.i`` that of ``convN.conv`` or ``convN.norm``."""
    for key, value in aliases.items():
        named = key[len("decoder."):] if key.startswith("decoder.encoder.") else key
        if match := re.match(r"^(.*)\.all_modules\.\d+\.(.+)$", named):
            candidates = [f"{match.group(1)}.{kind}.{match.group(2)}" for kind in ("conv", "norm")]
        else:
            candidates = [named]
        ours = [state.get(_rename(c, "umambabot")) for c in candidates]
        if not any(t is not None and t.shape == value.shape and torch.equal(t, value) for t in ours):
            where = "the encoder's own tensor" if key.startswith("decoder.encoder.") else "its named conv or norm"
            raise ValueError(f"{source}: {key} differs from {where}; the file is damaged or not an official network")


def _stack_old_lambdas(lambdas: dict[int, torch.Tensor], source: str) -> tuple[torch.Tensor, str]:
    indices = sorted(lambdas)
    if indices != list(range(1, len(indices) + 1)) or any(lambdas[i].numel() != 1 for i in indices):
        raise ValueError(f"{source}: lambda_* entries {indices} are not the first published Diff-UMamba's "
                         "lambda_1..lambda_N scalars")
    values = torch.stack([lambdas[i].reshape(()) for i in indices])
    tied = bool(torch.all(values == values[0]))
    note = (f"first published Diff-UMamba version (conv3d_*/lambda_*): its {len(indices)} lambdas were one tied "
            f"parameter{' (all ' + format(float(values[0]), '.4g') + ')' if tied else ''}; imported as "
            f"{len(indices)} independent lambdas with {'that value' if tied else 'their saved values'}, which "
            "computes the same outputs (fine-tuning would then learn them separately)")
    return values.float(), note
