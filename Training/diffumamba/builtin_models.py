"""The built-in models: what ``correct`` and ``serve`` use when no ``--model`` is given.

A built-in model is a model package (``model_package``) named ``<name>-<semantic version>.zip``, looked for in this
order, the first place that holds one winning (the newest version there, by semantic version, if it holds several):

1. the file named by the task's environment variable (``DIFFUMAMBA_CLICK_MODEL`` for correction);
2. ``models/`` inside the installed ``diffumamba`` package;
3. ``Models/`` two folders above the package: the installed Slicer extension, where the package lies in
   ``Resources/Training/diffumamba`` and the models in ``Resources/Models``;
4. ``DiffUMambaSeg/Resources/Models/`` two folders above the package: the source checkout (``Training/diffumamba``).

Nothing is downloaded and nothing is loaded here; the package is verified when it is loaded, like any ``--model``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

__all__ = ["BUILTIN", "builtin_model", "search_folders", "version_key"]

# task -> (package name, environment variable naming a package file, what it is called in messages)
BUILTIN = {"correction": ("click-lesion", "DIFFUMAMBA_CLICK_MODEL", "click lesion model")}

_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
                     r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$")


def version_key(version: str) -> Optional[tuple]:
    """A sort key for a semantic version (semver.org's precedence: a pre-release sorts before its release,
    numeric identifiers before alphanumeric ones, build metadata ignored); None for anything else."""
    match = _SEMVER.match(version)
    if not match:
        return None
    major, minor, patch, pre = match.groups()
    identifiers = () if pre is None else tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return int(major), int(minor), int(patch), pre is None, identifiers


def search_folders(package_dir: Optional[Path] = None) -> list[Path]:
    """The folders searched after the environment variable, in order (``package_dir``: the ``diffumamba`` package's
    folder; this installation's by default)."""
    package_dir = Path(package_dir) if package_dir is not None else Path(__file__).resolve().parent
    above = package_dir.parents[1]          # parents[2] of diffumamba/__init__.py
    return [package_dir / "models", above / "Models", above / "DiffUMambaSeg" / "Resources" / "Models"]


def _newest(folder: Path, name: str) -> Optional[Path]:
    if not folder.is_dir():
        return None
    found = []
    for path in folder.glob(f"{name}-*.zip"):
        key = version_key(path.name[len(name) + 1:-len(".zip")])
        if key is not None and path.is_file():
            found.append((key, path))
    return max(found)[1] if found else None


def builtin_model(task: str = "correction", package_dir: Optional[Path] = None) -> Path:
    """The built-in model package for ``task``; FileNotFoundError (one line naming where it looked and saying to
    pass --model) when there is none. An environment variable naming a missing file is an error, not skipped."""
    if task not in BUILTIN:
        raise ValueError(f"no built-in model for task {task!r}; pass --model")
    name, variable, what = BUILTIN[task]
    chosen = os.environ.get(variable, "").strip()
    if chosen:
        path = Path(chosen).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{variable}={chosen} names no file (the built-in {what}); fix or unset "
                                    f"{variable}, or pass --model")
        return path
    folders = search_folders(package_dir)
    for folder in folders:
        found = _newest(folder, name)
        if found is not None:
            return found
    raise FileNotFoundError(f"no built-in {what} ({name}-VERSION.zip): {variable} is unset and none is in "
                            f"{', '.join(map(str, folders))}; pass --model CHECKPOINT_OR_PACKAGE")
