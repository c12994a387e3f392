"""Model files in the user's cache: downloads and imports verified by SHA-256, never unpickled.

Weights are cached in the user's profile (``~/.DiffUMambaSeg/models`` unless ``DIFFUMAMBASEG_MODELS`` says
otherwise), never in the extension folder, which Slicer replaces on every update. Every file is verified against
the catalog's SHA-256 before it is used: a download or an offline import (a ``.safetensors`` checkpoint, or a
model package ``.zip``) that does not match is refused and nothing is left in the cache. A user's own checkpoint
(or package) without a catalog entry is imported with ``ModelCache.import_local``, into a folder named from the
file name and its SHA-256. No path computed here leaves the cache root.

A model package is checked member by member against its manifest before it is installed, and is kept as the
verified ``.zip``, never unpacked: the command line is given the zip and checks it again on every run, so what
runs is always what the manifest lists. The check is the command line's own (``diffumamba/package_manifest.py``,
standard library only), loaded by path from the package shipped with the extension: importing ``diffumamba``
itself would pull torch into Slicer's process, and a second copy of the check could drift from the first.
"""

from __future__ import annotations

import errno
import hashlib
import importlib.util
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

from .model_entry import CatalogError, ModelEntry, name_problem, resolve_url
from .environment import package_dir

__all__ = ["ModelFileError", "ChecksumError", "DownloadCancelled", "CacheWriteError", "ModelCache", "sha256_of",
           "default_cache_dir", "package_verifier"]

LOCAL_FOLDER = "local"          # ModelCache.root / "local" / "<name>-<sha256[:12]>": imports without an entry
BLOCK = 1 << 18                 # download block; cancelling is checked between blocks
MODULE_DIR = Path(__file__).absolute().parents[1]
DISK_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EROFS, getattr(errno, "EDQUOT", errno.ENOSPC)}


class ModelFileError(ValueError):
    """A file is not a model the module can use (wrong type, an unsafe or empty zip, not safetensors)."""


class ChecksumError(ModelFileError):
    """A file's SHA-256 differs from the catalog's: it is not the model the catalog describes."""


class DownloadCancelled(Exception):
    """``ModelCache.download`` stopped because ``should_stop()`` said so; nothing was left in the cache."""


class CacheWriteError(OSError):
    """The cache's disk is full or read-only: the message names the file and the cache folder."""


_VERIFIER = {}


def package_verifier(module_dir: Optional[Path] = None):
    """``diffumamba/package_manifest.py`` of the package shipped with the extension, loaded by path (once)."""
    path = package_dir(module_dir or MODULE_DIR) / "diffumamba" / "package_manifest.py"
    if path not in _VERIFIER:
        spec = importlib.util.spec_from_file_location("_diffumambaseg_package_manifest", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _VERIFIER[path] = module
    return _VERIFIER[path]


def _verify_package(path: Path, shown: str) -> None:
    """ModelFileError (``shown``: what is wrong) unless every member of the package matches its manifest."""
    verifier = package_verifier()
    try:
        verifier.verify_package(path, shown)
    except verifier.PackageError as err:
        raise ModelFileError(f"{shown}: {err.problem}") from None


def _disk_error(err: OSError, name: str, root: Path) -> Optional[CacheWriteError]:
    """A one-line error naming the file and the cache when ``err`` is a full or read-only disk, else None."""
    if err.errno not in DISK_ERRNOS:
        return None
    error = CacheWriteError(f"could not write {name} into the model cache {root}: {err.strerror or err}; free "
                            "space there (or set DIFFUMAMBASEG_MODELS to a folder with room) and try again; "
                            "nothing was installed")
    error.errno = err.errno
    return error


def _copy_into_cache(source: Path, target: Path, root: Path) -> None:
    try:
        shutil.copyfile(source, target)
    except OSError as err:
        raise _disk_error(err, source.name, root) or err from None


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
    """Verified model files under ``root``; ``checkpoints(entry)`` gives the files to pass to the CLI's ``--model``
    (the ``.safetensors`` checkpoint, or the model package ``.zip``, which the CLI verifies again)."""

    def __init__(self, root: Optional[Path] = None):
        self.root = Path(root) if root is not None else default_cache_dir()

    def folder(self, entry: ModelEntry) -> Path:
        """``root/<id>-<version>``; an id or version that is not a plain name, or a folder that would lie
        outside ``root``, raises CatalogError (an entry may be made without ``load_catalog``)."""
        for key in ("id", "version"):
            problem = name_problem(key, getattr(entry, key))
            if problem:
                raise CatalogError(f"model {entry.name!r}: {problem}")
        return _inside(self.root, self.root / f"{entry.id}-{entry.version}")

    def model_file(self, entry: ModelEntry) -> Path:
        """Where the verified file lies: ``<id>.safetensors``, or the package as ``<id>-<version>.zip``."""
        folder = self.folder(entry)
        return folder / (entry.file_name if entry.file_name.endswith(".zip") else f"{entry.id}.safetensors")

    def is_cached(self, entry: ModelEntry) -> bool:
        """The file is there and was verified against this entry's SHA-256. A folder from an earlier release that
        holds a package unpacked, or a file verified for another SHA-256, is not: it is installed again."""
        marker = self.folder(entry) / "VERIFIED"
        return marker.is_file() and marker.read_text().strip() == entry.sha256 and self.model_file(entry).is_file()

    def checkpoints(self, entry: ModelEntry) -> list[Path]:
        return [self.model_file(entry)] if self.is_cached(entry) else []

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
                disk = _disk_error(err, entry.file_name, self.root)
                if disk:
                    raise disk from None
                shown = entry.url if source == entry.url else f"{entry.url} ({source})"
                raise OSError(f"could not download {entry.name} {entry.version} from {shown}: {err}") from None
            if stop():
                raise DownloadCancelled(f"download of {entry.name} {entry.version} cancelled")
            return self._install(entry, target, owned=True, shown=f"{entry.name} {entry.version} from {entry.url}")

    def import_file(self, entry: ModelEntry, path: Path) -> list[Path]:
        """Offline sites: a checkpoint or zip obtained by other means, verified like a download."""
        path = Path(path)
        self.folder(entry)                           # refuses a folder outside the cache before any work
        if not path.is_file():
            raise FileNotFoundError(f"no such model file: {path}")
        self.root.mkdir(parents=True, exist_ok=True)
        return self._install(entry, path)

    def import_local(self, path: Path) -> list[Path]:
        """A user's own ``.safetensors`` checkpoint, or model package ``.zip``, without a catalog entry: verified
        (a package member by member against its manifest, a checkpoint by its safetensors header) and copied into
        ``root/local/<name>-<sha256[:12]>`` (importing the same file again changes nothing; another file of the
        same name gets its own folder). Returns ``[the cached file]``. Nothing is unpickled: anything but
        safetensors (a PyTorch .pt/.pth/.ckpt) is refused, as is a zip that fails its manifest."""
        path = Path(path)
        expected = "a .safetensors checkpoint or a model package .zip (diffumamba package)"
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
        installed = folder / f"{stem}{kind}"
        marker = folder / "VERIFIED"
        if marker.is_file() and marker.read_text().strip() == digest and installed.is_file():
            return [installed]
        folder.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".import-") as tmp:
            staging = Path(tmp) / "model"
            staging.mkdir()
            copy = staging / installed.name
            _copy_into_cache(path, copy, self.root)          # checked as copied: the source may change meanwhile
            if sha256_of(copy) != digest:
                raise ModelFileError(f"cannot import {path.name}: it changed while it was being copied; try again")
            if kind == ".zip":
                _verify_package(copy, f"cannot import {path.name}")
            else:
                problem = _safetensors_problem(copy)
                if problem:
                    raise ModelFileError(f"cannot import {path.name}: {problem} (expected {expected})")
            (staging / "VERIFIED").write_text(digest + "\n")
            if folder.exists():
                shutil.rmtree(folder)                    # e.g. a package unpacked by an earlier release
            os.replace(staging, folder)
        return [installed]

    def imported(self) -> dict[str, list[Path]]:
        """Earlier ``import_local`` results: folder name -> its checkpoint or package."""
        base = self.root / LOCAL_FOLDER
        if not base.is_dir():
            return {}
        found = {}
        for folder in sorted(base.iterdir()):
            files = sorted(p for p in folder.glob("*") if p.is_file() and p.suffix.lower() in (".safetensors", ".zip"))
            if (folder / "VERIFIED").is_file() and files:
                found[folder.name] = files
        return found

    def _install(self, entry: ModelEntry, source: Path, owned: bool = False, shown: str = "") -> list[Path]:
        """Copy (or, ``owned``: move) ``source`` into a staging folder, check the copy's SHA-256 and, for a
        package, every member against its manifest; only then replace the entry's folder."""
        folder = self.folder(entry)                  # refuses a folder outside the cache before any work
        with tempfile.TemporaryDirectory(dir=self.root, prefix=".install-") as tmp:
            staging = Path(tmp) / "model"
            staging.mkdir()
            copy = staging / self.model_file(entry).name
            if owned:
                os.replace(source, copy)
            else:
                _copy_into_cache(source, copy, self.root)
            actual = sha256_of(copy)
            if actual != entry.sha256:
                raise ChecksumError(f"{source.name} is not {entry.name} {entry.version}: its SHA-256 is {actual}, "
                                    f"the catalog's {entry.sha256}. The file was damaged or replaced; it was not "
                                    "installed.")
            if copy.suffix == ".zip":
                _verify_package(copy, shown or f"{source.name} ({entry.name} {entry.version})")
            (staging / "VERIFIED").write_text(entry.sha256 + "\n")
            if folder.exists():
                shutil.rmtree(folder)                    # e.g. a package unpacked by an earlier release
            os.replace(staging, folder)
        return self.checkpoints(entry)


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
            if zipfile.is_zipfile(path):
                return "it is a zip, not a safetensors file (a model package or PyTorch file renamed?)"
            return "it is not a safetensors file (no valid header; a renamed PyTorch pickle?)"
        try:
            header = json.loads(handle.read(length).decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return "it is not a safetensors file (its header is not JSON)"
    if not isinstance(header, dict) or not any(k != "__metadata__" for k in header):
        return "it is not a safetensors file (its header lists no tensor)"
    return ""


