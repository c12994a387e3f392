"""The model catalog (``Resources/Models.json``): what can be downloaded, verified by SHA-256, cached.

Weights are cached in the user's profile (``~/.DiffUMambaSeg/models`` unless ``DIFFUMAMBASEG_MODELS``
says otherwise), never in the extension folder, which Slicer replaces on every update. Every file is
verified against the catalog's SHA-256 before it is used: a download or an offline import (a
``.safetensors`` checkpoint, or a ``.zip`` of the folds) that does not match is refused and nothing is
left in the cache. Checkpoints are safetensors (weights only, never unpickled).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

__all__ = ["CatalogError", "ChecksumError", "ModelEntry", "load_catalog", "ModelCache", "sha256_of", "default_cache_dir"]

REQUIRED = ("id", "name", "version", "task", "input_channels", "url", "sha256", "license")
TASKS = ("segmentation", "propagation")
SHA256 = re.compile(r"^[0-9a-f]{64}$")


class CatalogError(ValueError):
    """The catalog file is unreadable or an entry is malformed."""


class ChecksumError(ValueError):
    """A file's SHA-256 differs from the catalog's: it is not the model the catalog describes."""


@dataclass(frozen=True)
class ModelEntry:
    id: str
    name: str
    version: str
    task: str
    input_channels: tuple
    url: str
    sha256: str
    license: str
    description: str = ""
    size_bytes: Optional[int] = None
    seconds: dict = field(default_factory=dict, hash=False, compare=False)   # measured {"cpu": s, "gpu": s}

    @property
    def file_name(self) -> str:
        suffix = ".zip" if self.url.lower().endswith(".zip") else ".safetensors"
        return f"{self.id}-{self.version}{suffix}"


def load_catalog(path: Path) -> list[ModelEntry]:
    """Entries of a catalog file; every problem is named with the entry it is in."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CatalogError(f"cannot read the model catalog {path}: {err}") from None
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, list):
        raise CatalogError(f"{path}: expected an object with a 'models' list")
    entries, seen = [], set()
    for index, item in enumerate(models):
        where = f"{path}: model {index + 1}" + (f" ({item.get('id')})" if isinstance(item, dict) and "id" in item else "")
        if not isinstance(item, dict):
            raise CatalogError(f"{where}: expected an object")
        missing = [key for key in REQUIRED if key not in item]
        if missing:
            raise CatalogError(f"{where}: missing {', '.join(missing)}")
        if item["task"] not in TASKS:
            raise CatalogError(f"{where}: task must be one of {', '.join(TASKS)}, not {item['task']!r}")
        if not SHA256.match(str(item["sha256"])):
            raise CatalogError(f"{where}: sha256 must be 64 lower-case hex digits")
        channels = item["input_channels"]
        if not isinstance(channels, list) or not channels or not all(isinstance(c, str) for c in channels):
            raise CatalogError(f"{where}: input_channels must be a non-empty list of names")
        key = (item["id"], item["version"])
        if key in seen:
            raise CatalogError(f"{where}: {item['id']} {item['version']} is listed twice")
        seen.add(key)
        entries.append(ModelEntry(str(item["id"]), str(item["name"]), str(item["version"]), item["task"],
                                  tuple(channels), str(item["url"]), str(item["sha256"]), str(item["license"]),
                                  str(item.get("description", "")), item.get("size_bytes"), dict(item.get("seconds", {}))))
    return entries


def default_cache_dir() -> Path:
    return Path(os.environ.get("DIFFUMAMBASEG_MODELS", Path.home() / ".DiffUMambaSeg" / "models"))


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


class ModelCache:
    """Verified model files under ``root``; ``checkpoints(entry)`` gives the .safetensors to pass to the CLI."""

    def __init__(self, root: Optional[Path] = None):
        self.root = Path(root) if root is not None else default_cache_dir()

    def folder(self, entry: ModelEntry) -> Path:
        return self.root / f"{entry.id}-{entry.version}"

    def is_cached(self, entry: ModelEntry) -> bool:
        return (self.folder(entry) / "VERIFIED").is_file() and bool(self.checkpoints(entry))

    def checkpoints(self, entry: ModelEntry) -> list[Path]:
        return sorted(self.folder(entry).glob("**/*.safetensors"))

    def download(self, entry: ModelEntry, progress: Callable[[int, Optional[int]], None] = lambda done, total: None
                 ) -> list[Path]:
        """Fetch ``entry.url`` (http(s) or file), verify, install; the cached copy when already there."""
        if self.is_cached(entry):
            return self.checkpoints(entry)
        self.root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.root, prefix=".download-") as tmp:
            target = Path(tmp) / entry.file_name
            try:
                with urllib.request.urlopen(entry.url, timeout=60) as response, open(target, "wb") as out:
                    total = response.headers.get("Content-Length") if hasattr(response, "headers") else None
                    total, done = (int(total) if total else entry.size_bytes), 0
                    for block in iter(lambda: response.read(1 << 20), b""):
                        out.write(block)
                        done += len(block)
                        progress(done, total)
            except OSError as err:
                raise OSError(f"could not download {entry.name} {entry.version} from {entry.url}: {err}") from None
            return self._install(entry, target)

    def import_file(self, entry: ModelEntry, path: Path) -> list[Path]:
        """Offline sites: a checkpoint or zip obtained by other means, verified like a download."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no such model file: {path}")
        self.root.mkdir(parents=True, exist_ok=True)
        return self._install(entry, path)

    def _install(self, entry: ModelEntry, source: Path) -> list[Path]:
        actual = sha256_of(source)
        if actual != entry.sha256:
            raise ChecksumError(f"{source.name} is not {entry.name} {entry.version}: its SHA-256 is {actual}, the "
                                f"catalog's {entry.sha256}. The file was damaged or replaced; it was not installed.")
        with tempfile.TemporaryDirectory(dir=self.root, prefix=".install-") as tmp:
            staging = Path(tmp) / "model"
            staging.mkdir()
            if source.suffix.lower() == ".zip":
                _safe_extract(source, staging)
            else:
                shutil.copyfile(source, staging / f"{entry.id}.safetensors")
            if not list(staging.glob("**/*.safetensors")):
                raise ChecksumError(f"{source.name} holds no .safetensors checkpoint")
            (staging / "VERIFIED").write_text(entry.sha256 + "\n")
            folder = self.folder(entry)
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(staging, folder)
        return self.checkpoints(entry)


def _safe_extract(archive: Path, target: Path) -> None:
    """Extract a zip refusing absolute paths and '..' (a zip must not write outside the cache)."""
    with zipfile.ZipFile(archive) as bundle:
        for member in bundle.namelist():
            resolved = (target / member).resolve()
            if not str(resolved).startswith(str(target.resolve()) + os.sep) and resolved != target.resolve():
                raise ChecksumError(f"{archive.name} contains an unsafe path: {member}")
        bundle.extractall(target)
