"""A model package: one ``.zip`` with the weights of every fold, their plan and a model card.

What the Slicer catalog ships or downloads, and what ``predict``/``propagate --model`` accept in place of the
separate checkpoints. Layout::

    MODEL_CARD.md              what the model is for, its data, licence and measured accuracy (may be absent)
    plan.json                  the plan all folds share (spacing, normalisation, network), for readers of the zip
    manifest.json              format, folds, and the SHA-256 and size of every other member
    fold_<name>/model.safetensors   one weights-only checkpoint per fold (its header holds the plan too)
    <extra files>              e.g. the nnU-Net dataset.json an imported model came from

Only safetensors are inside, so opening a package never runs code. Reading one is ``package_manifest``'s job
(shared with the Slicer module): nothing in a package is used before every member matched its manifest. The zip is
written to a temporary file, read back through that same check, compared tensor by tensor with what was meant to
be written, and only then moved into place.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch

from .package_manifest import FORMAT as PACKAGE_FORMAT
from .package_manifest import MANIFEST, fold_member, manifest_bytes, verify_package

__all__ = ["PACKAGE_FORMAT", "PackageFold", "write_model_package", "package_members", "is_package",
           "check_not_renamed_package"]


@dataclass
class PackageFold:
    """One fold to package: its name (``0``, ``all``, ...), checkpoint header and weights."""

    name: str
    header: dict
    state: dict[str, torch.Tensor]


def is_package(path: Path) -> bool:
    return Path(path).suffix.lower() == ".zip"


def check_not_renamed_package(path: Path) -> None:
    """A package renamed ``.safetensors`` would otherwise be refused as "a pickled PyTorch file" (both are zips),
    which sends the user the wrong way; name what it is instead. Only the zip's directory is read."""
    path = Path(path)
    if is_package(path) or not path.is_file() or not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, EOFError):
        return
    if MANIFEST in names or any(n.startswith("fold_") and n.endswith("/model.safetensors") for n in names):
        raise ValueError(f"{path}: this is a model package (a .zip) named {path.suffix or 'without .zip'}; rename "
                         f"it to {path.stem}.zip and pass that")


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
    members = {fold_member(fold.name): weights_only_bytes(fold.header, fold.state) for fold in folds}
    files = {"plan.json": json.dumps(folds[0].header["plan"], indent=2, sort_keys=True).encode(), **members}
    if card is not None:
        files["MODEL_CARD.md"] = card.encode()
    for name, raw in (extra_files or {}).items():
        if name in files or name == MANIFEST:
            raise ValueError(f"extra file {name} would replace the package's own")
        files[name] = raw
    files = {MANIFEST: manifest_bytes(names, files), **files}
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
    """(member name, checkpoint bytes) of every fold of a package, in the manifest's fold order, once every member
    of the package matched its manifest (``package_manifest.verify_package``: ValueError naming the package)."""
    package = verify_package(Path(path), str(display or path), keep=lambda name: name.endswith(".safetensors"))
    return [(fold_member(fold), package.data[fold_member(fold)]) for fold in package.folds]
