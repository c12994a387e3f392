"""Model files in the user's cache: downloads and imports verified by SHA-256, never unpickled.

Weights are cached in the user's profile (``~/.DiffUMambaSeg/models`` unless ``DIFFUMAMBASEG_MODELS`` says
otherwise), never in the extension folder, which Slicer replaces on every update. Every file is verified against
the catalog's SHA-256 before it is used: a download or an offline import (a ``.safetensors`` checkpoint, or a
``.zip`` of the folds) that does not match is refused and nothing is left in the cache. A user's own checkpoint
(or a zip of them) without a catalog entry is imported with ``ModelCache.import_local``, into a folder named
from the file name and its SHA-256. No path computed here leaves the cache root.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import tempfile
import urllib.request
import zipfile
from pathlib import Path
from typing import Callable, Optional

from .catalog import CatalogError, ModelEntry, _name_problem, resolve_url

__all__ = ["ModelFileError", "ChecksumError", "DownloadCancelled", "ModelCache", "sha256_of", "default_cache_dir"]

LOCAL_FOLDER = "local"          # ModelCache.root / "local" / "<name>-<sha256[:12]>": imports without an entry
BLOCK = 1 << 18                 # download block; cancelling is checked between blocks


class ModelFileError(ValueError):
    """A file is not a model the module can use (wrong type, an unsafe or empty zip, not safetensors)."""


class ChecksumError(ModelFileError):
    """A file's SHA-256 differs from the catalog's: it is not the model the catalog describes."""


class DownloadCancelled(Exception):
    """``ModelCache.download`` stopped because ``should_stop()`` said so; nothing was left in the cache."""


def _inside(root: Path, path: Path) -> Path:
    """``path`` when it lies strictly inside ``root`` (after resolving '..' and links); else CatalogError."""
    base, resolved = Path(root).resolve(), Path(path).resolve()
    if resolved == base or base not in resolved.parents:
        raise CatalogError(f"{path} lies outside the model cache {base}; refusing to write or delete there")
    return path


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
        """``root/<id>-<version>``; an id or version that is not a plain name, or a folder that would lie
        outside ``root``, raises CatalogError (an entry may be made without ``load_catalog``)."""
        for key in ("id", "version"):
            problem = _name_problem(key, getattr(entry, key))
            if problem:
                raise CatalogError(f"model {entry.name!r}: {problem}")
        return _inside(self.root, self.root / f"{entry.id}-{entry.version}")

    def is_cached(self, entry: ModelEntry) -> bool:
        return (self.folder(entry) / "VERIFIED").is_file() and bool(self.checkpoints(entry))

    def checkpoints(self, entry: ModelEntry) -> list[Path]:
        return sorted(self.folder(entry).glob("**/*.safetensors"))

    def download(self, entry: ModelEntry, progress: Callable[[int, Optional[int]], None] = lambda done, total: None,
                 should_stop: Optional[Callable[[], bool]] = None) -> list[Path]:
        """Fetch the entry's file (http(s), file://, or shipped with the extension), verify, install; the
        cached copy when already there. ``should_stop()`` is asked between blocks: True raises
        ``DownloadCancelled`` and leaves nothing in the cache."""
        if self.is_cached(entry):
            return self.checkpoints(entry)
        self.folder(entry)                           # refuses a folder outside the cache before downloading
        source = resolve_url(entry.url, entry.catalog_dir)
        stop = should_stop or (lambda: False)
        self.root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.root, prefix=".download-") as tmp:
            target = Path(tmp) / entry.file_name
            try:
                with urllib.request.urlopen(source, timeout=60) as response, open(target, "wb") as out:
                    total = response.headers.get("Content-Length") if hasattr(response, "headers") else None
                    total, done = (int(total) if total else entry.size_bytes), 0
                    read = getattr(response, "read1", response.read)   # what has arrived, not a full block
                    while True:
                        if stop():
                            raise DownloadCancelled(f"download of {entry.name} {entry.version} cancelled")
                        block = read(BLOCK)
                        if not block:
                            break
                        out.write(block)
                        done += len(block)
                        progress(done, total)
            except OSError as err:
                shown = entry.url if source == entry.url else f"{entry.url} ({source})"
                raise OSError(f"could not download {entry.name} {entry.version} from {shown}: {err}") from None
            if stop():
                raise DownloadCancelled(f"download of {entry.name} {entry.version} cancelled")
            return self._install(entry, target)

    def import_file(self, entry: ModelEntry, path: Path) -> list[Path]:
        """Offline sites: a checkpoint or zip obtained by other means, verified like a download."""
        path = Path(path)
        self.folder(entry)                           # refuses a folder outside the cache before any work
        if not path.is_file():
            raise FileNotFoundError(f"no such model file: {path}")
        self.root.mkdir(parents=True, exist_ok=True)
        return self._install(entry, path)

    def import_local(self, path: Path) -> list[Path]:
        """A user's own ``.safetensors`` checkpoint, or a ``.zip`` of them, without a catalog entry: copied
        into ``root/local/<name>-<sha256[:12]>`` (importing the same file again changes nothing; another
        file of the same name gets its own folder). Returns the checkpoints. Nothing is unpickled: anything
        but safetensors (a PyTorch .pt/.pth/.ckpt) is refused, as are zips with unsafe paths."""
        path = Path(path)
        expected = "a .safetensors checkpoint or a .zip of .safetensors checkpoints"
        if not path.is_file():
            raise FileNotFoundError(f"no such model file: {path} (expected {expected})")
        kind = path.suffix.lower()
        if kind not in (".safetensors", ".zip"):
            raise ModelFileError(f"cannot import {path.name}: expected {expected}"
                                 + (" (PyTorch pickles are never loaded; save the weights with safetensors)"
                                    if kind in (".pt", ".pth", ".ckpt", ".pkl", ".bin") else ""))
        digest = sha256_of(path)
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem).strip("._") or "model"
        folder = _inside(self.root, self.root / LOCAL_FOLDER / f"{stem[:60]}-{digest[:12]}")
        marker = folder / "VERIFIED"
        if marker.is_file() and marker.read_text().strip() == digest:
            found = sorted(folder.glob("**/*.safetensors"))
            if found:
                return found
        folder.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".import-") as tmp:
            staging = Path(tmp) / "model"
            staging.mkdir()
            if kind == ".zip":
                if not zipfile.is_zipfile(path):
                    raise ModelFileError(f"cannot import {path.name}: it is not a readable zip (expected {expected})")
                _safe_extract(path, staging)
            else:
                shutil.copyfile(path, staging / f"{stem}.safetensors")
            found = sorted(staging.glob("**/*.safetensors"))
            if not found:
                raise ModelFileError(f"cannot import {path.name}: the zip holds no .safetensors checkpoint "
                                     f"(expected {expected})")
            for checkpoint in found:
                problem = _safetensors_problem(checkpoint)
                if problem:
                    inner = "" if kind == ".safetensors" else f" ({checkpoint.relative_to(staging).as_posix()})"
                    raise ModelFileError(f"cannot import {path.name}{inner}: {problem} (expected {expected})")
            marker_tmp = staging / "VERIFIED"
            marker_tmp.write_text(digest + "\n")
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(staging, folder)
        return sorted(folder.glob("**/*.safetensors"))

    def imported(self) -> dict[str, list[Path]]:
        """Earlier ``import_local`` results: folder name -> its checkpoints."""
        base = self.root / LOCAL_FOLDER
        if not base.is_dir():
            return {}
        return {folder.name: sorted(folder.glob("**/*.safetensors")) for folder in sorted(base.iterdir())
                if (folder / "VERIFIED").is_file()}

    def _install(self, entry: ModelEntry, source: Path) -> list[Path]:
        folder = self.folder(entry)                  # refuses a folder outside the cache before any work
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
                raise ModelFileError(f"{source.name} holds no .safetensors checkpoint")
            (staging / "VERIFIED").write_text(entry.sha256 + "\n")
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
                raise ModelFileError(f"{archive.name} contains an unsafe path: {member}")
        bundle.extractall(target)


def _safetensors_problem(path: Path) -> str:
    """Why ``path`` is not a safetensors file (its 8-byte header length and JSON header), or ''. Only the
    header is read: nothing is loaded, let alone unpickled."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            return "it is not a safetensors file (too short)"
        length = struct.unpack("<Q", head)[0]
        if length < 2 or length > min(size - 8, 100 << 20):
            return "it is not a safetensors file (no valid header; a renamed PyTorch pickle?)"
        try:
            header = json.loads(handle.read(length).decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return "it is not a safetensors file (its header is not JSON)"
    if not isinstance(header, dict) or not any(k != "__metadata__" for k in header):
        return "it is not a safetensors file (its header lists no tensor)"
    return ""


