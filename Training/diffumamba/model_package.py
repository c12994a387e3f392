"""A model package: one ``.zip`` with the weights of every fold, their plan and a model card.

What the Slicer catalog ships or downloads, and what ``predict``/``propagate --model`` accept in place of the
separate checkpoints. Layout::

    MODEL_CARD.md              what the model is for, its data, licence and measured accuracy (may be absent)
    plan.json                  the plan all folds share (spacing, normalisation, network), for readers of the zip
    manifest.json              format, folds, SHA-256 of each fold's checkpoint
    fold_<name>/model.safetensors   one weights-only checkpoint per fold (its header holds the plan too)
    <extra files>              e.g. the nnU-Net dataset.json an imported model came from

Only safetensors are inside, so opening a package never runs code. The zip is written to a temporary file, read
back and compared tensor by tensor with what was meant to be written, and only then moved into place.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Optional, Sequence

import torch

__all__ = ["PACKAGE_FORMAT", "PackageFold", "write_model_package", "package_members", "is_package"]

PACKAGE_FORMAT = "diffumamba-model-package/1"


@dataclass
class PackageFold:
    """One fold to package: its name (``0``, ``all``, ...), checkpoint header and weights."""

    name: str
    header: dict
    state: dict[str, torch.Tensor]


def is_package(path: Path) -> bool:
    return Path(path).suffix.lower() == ".zip"


def write_model_package(out: Path, folds: Sequence[PackageFold], card: Optional[str] = None,
                        extra_files: Optional[dict[str, bytes]] = None) -> str:
    """Write, verify and move the package into place; returns its SHA-256 (what a catalog entry lists)."""
    from .checkpoint import load_checkpoint_bytes, weights_only_bytes
    from .files import atomic_output
    from .inference.predictor import check_same_plan

    if not folds:
        raise ValueError("a model package needs at least one fold")
    names = [fold.name for fold in folds]
    if len(set(names)) != len(names):
        raise ValueError(f"fold names repeat: {names}")
    check_same_plan([fold.header["plan"] for fold in folds])
    members = {f"fold_{fold.name}/model.safetensors": weights_only_bytes(fold.header, fold.state) for fold in folds}
    manifest = {"format": PACKAGE_FORMAT, "folds": names,
                "sha256": {name: hashlib.sha256(raw).hexdigest() for name, raw in members.items()}}
    files = {"manifest.json": json.dumps(manifest, indent=2).encode(),
             "plan.json": json.dumps(folds[0].header["plan"], indent=2, sort_keys=True).encode(), **members}
    if card is not None:
        files["MODEL_CARD.md"] = card.encode()
    for name, raw in (extra_files or {}).items():
        if name in files:
            raise ValueError(f"extra file {name} would replace the package's own")
        files[name] = raw
    out = Path(out)
    with atomic_output(out) as temporary:
        with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, raw in files.items():
                archive.writestr(name, raw)
        read_back = dict(package_members(temporary, display=out))
        for fold, name in zip(folds, members):
            _, state, _ = load_checkpoint_bytes(read_back[name], name)
            if state.keys() != fold.state.keys() or any(not torch.equal(state[k], fold.state[k].cpu())
                                                       for k in state):
                raise OSError(5, f"{name} read back differs from what was written")
        digest = hashlib.sha256(temporary.read_bytes()).hexdigest()
    return digest


def package_members(path: Path, display: Optional[Path] = None) -> list[tuple[str, bytes]]:
    """(member name, checkpoint bytes) of every fold of a package, in fold order, checked against its manifest."""
    path = Path(path)
    shown = display or path
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            unsafe = [n for n in names if PurePosixPath(n).is_absolute() or ".." in PurePosixPath(n).parts]
            if unsafe:
                raise ValueError(f"{shown}: refused: the zip holds paths outside itself ({unsafe[0]})")
            manifest = json.loads(archive.read("manifest.json")) if "manifest.json" in names else None
            weights = sorted(n for n in names if n.endswith(".safetensors"))
            members = [(n, archive.read(n)) for n in weights]
    except (zipfile.BadZipFile, EOFError, zlib.error) as err:
        raise ValueError(f"{shown}: not a readable model package ({err}); the file may be truncated: download or "
                         "copy it again") from None
    except (KeyError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{shown}: damaged model package ({err}); download or copy it again") from None
    if not members:
        raise ValueError(f"{shown}: the zip holds no .safetensors checkpoint: not a DiffUMambaSeg model package")
    if manifest is not None:
        expected = manifest.get("sha256", {})
        for name, raw in members:
            if name in expected and hashlib.sha256(raw).hexdigest() != expected[name]:
                raise ValueError(f"{shown}: {name} does not match the package's manifest (damaged); copy it again")
    return members
