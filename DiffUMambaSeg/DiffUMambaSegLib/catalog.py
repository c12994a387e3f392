"""The model catalog (``Resources/Models.json``): what can be downloaded, verified by SHA-256, cached.

Weights are cached in the user's profile (``~/.DiffUMambaSeg/models`` unless ``DIFFUMAMBASEG_MODELS``
says otherwise), never in the extension folder, which Slicer replaces on every update. Every file is
verified against the catalog's SHA-256 before it is used: a download or an offline import (a
``.safetensors`` checkpoint, or a ``.zip`` of the folds) that does not match is refused and nothing is
left in the cache. Checkpoints are safetensors (weights only, never unpickled).

An entry's ``url`` is http(s)://, file://, or a path without a scheme: a file shipped inside the extension,
relative to the catalog file's folder (the module's ``Resources/``) and never outside it. A user's own
checkpoint (or a zip of them) without a catalog entry is imported with ``ModelCache.import_local``, into a
folder named from the file name and its SHA-256. Format and how to add a model: ``docs/model_catalog.md``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import posixpath
import re
import shutil
import struct
import tempfile
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Callable, Optional

__all__ = ["CatalogError", "ModelFileError", "ChecksumError", "DownloadCancelled", "ModelEntry", "load_catalog",
           "ModelCache", "sha256_of", "default_cache_dir", "resolve_url", "describe"]

REQUIRED = ("id", "name", "version", "task", "input_channels", "url", "sha256", "license")
TASKS = ("segmentation", "propagation")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")   # ids and versions: they become cache folder names
LOCAL_FOLDER = "local"          # ModelCache.root / "local" / "<name>-<sha256[:12]>": imports without an entry
BLOCK = 1 << 18                 # download block; cancelling is checked between blocks


class CatalogError(ValueError):
    """The catalog file is unreadable or an entry is malformed."""


class ModelFileError(ValueError):
    """A file is not a model the module can use (wrong type, an unsafe or empty zip, not safetensors)."""


class ChecksumError(ModelFileError):
    """A file's SHA-256 differs from the catalog's: it is not the model the catalog describes."""


class DownloadCancelled(Exception):
    """``ModelCache.download`` stopped because ``should_stop()`` said so; nothing was left in the cache."""


@dataclass(frozen=True)
class ModelEntry:
    id: str
    name: str
    version: str
    task: str
    input_channels: tuple
    url: str                 # as written in the catalog
    sha256: str
    license: str
    description: str = ""
    size_bytes: Optional[int] = None
    seconds: dict = field(default_factory=dict, hash=False, compare=False)   # measured {"cpu": s, "gpu": s}
    intended_use: str = ""
    accuracy: dict = field(default_factory=dict, hash=False, compare=False)  # {"dice": 0.71, ..., "dataset": "..."}
    catalog_dir: str = field(default="", compare=False)   # folder of the catalog file (shipped files live there)
    resolved_url: str = field(default="", compare=False)  # what is fetched: url, or file:// of the shipped file

    @property
    def file_name(self) -> str:
        suffix = ".zip" if self.url.lower().endswith(".zip") else ".safetensors"
        return f"{self.id}-{self.version}{suffix}"

    @property
    def shipped(self) -> bool:
        """The file ships inside the extension (a url without a scheme)."""
        return not SCHEME.match(self.url)

    @property
    def metrics(self) -> dict:
        """The accuracy numbers without the ``dataset`` text."""
        return {k: v for k, v in self.accuracy.items() if k != "dataset"}


def resolve_url(url: str, catalog_dir) -> str:
    """``url`` itself when it has a scheme; else the file:// URI of the shipped file it names under
    ``catalog_dir``. A path that is absolute or climbs out of ``catalog_dir`` with '..' is refused."""
    if SCHEME.match(url):
        return url
    text = url.replace("\\", "/")
    if not text.strip() or PurePosixPath(text).is_absolute() or PureWindowsPath(url).is_absolute() \
            or PureWindowsPath(url).drive:
        raise CatalogError(f"url {url!r} has no scheme, so it must be a path relative to the catalog's folder "
                           f"(a file shipped with the extension); use file:// for a file elsewhere")
    normal = posixpath.normpath(text)
    if normal == ".." or normal.startswith("../"):
        raise CatalogError(f"url {url!r} climbs out of the catalog's folder with '..'; a shipped file must lie "
                           f"inside it")
    if not catalog_dir:
        raise CatalogError(f"url {url!r} is relative to the catalog's folder, which this entry does not know "
                           f"(load it with load_catalog)")
    return Path(catalog_dir, *normal.split("/")).resolve().as_uri()


def _metric_ok(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_optional(item: dict, where: str) -> None:
    for key in ("intended_use", "description"):
        if key in item and not isinstance(item[key], str):
            raise CatalogError(f"{where}: {key} must be text")
    if "accuracy" in item:
        accuracy = item["accuracy"]
        if not isinstance(accuracy, dict):
            raise CatalogError(f"{where}: accuracy must be an object of metric name -> number "
                               f"(and an optional \"dataset\" text)")
        if "dataset" in accuracy and not isinstance(accuracy["dataset"], str):
            raise CatalogError(f"{where}: accuracy.dataset must be text (where the accuracy was measured)")
        bad = [k for k, v in accuracy.items() if k != "dataset" and not _metric_ok(v)]
        if bad:
            shown = ", ".join(f"{k}={accuracy[k]!r}" for k in bad)
            raise CatalogError(f"{where}: accuracy values must be numbers, not {shown}")
        if not any(k != "dataset" for k in accuracy):
            raise CatalogError(f"{where}: accuracy names no metric (e.g. {{\"dice\": 0.71}})")
    if "seconds" in item and (not isinstance(item["seconds"], dict)
                              or not all(_metric_ok(v) for v in item["seconds"].values())):
        raise CatalogError(f"{where}: seconds must be an object like {{\"cpu\": 34, \"gpu\": 6}}")
    if "size_bytes" in item and (not isinstance(item["size_bytes"], int) or isinstance(item["size_bytes"], bool)):
        raise CatalogError(f"{where}: size_bytes must be an integer")


def load_catalog(path: Path) -> list[ModelEntry]:
    """Entries of a catalog file; every problem is named with the entry it is in."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CatalogError(f"cannot read the model catalog {path}: {err}") from None
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, list):
        raise CatalogError(f"{path}: expected an object with a 'models' list")
    folder = str(Path(path).resolve().parent)
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
        if not isinstance(item["url"], str):
            raise CatalogError(f"{where}: url must be text")
        for key in ("id", "version"):
            problem = _name_problem(key, item[key])
            if problem:
                raise CatalogError(f"{where}: {problem}")
        _check_optional(item, where)
        try:
            resolved = resolve_url(item["url"], folder)
        except CatalogError as err:
            raise CatalogError(f"{where}: {err}") from None
        key = (item["id"], item["version"])
        if key in seen:
            raise CatalogError(f"{where}: {item['id']} {item['version']} is listed twice")
        seen.add(key)
        entries.append(ModelEntry(str(item["id"]), str(item["name"]), str(item["version"]), item["task"],
                                  tuple(channels), item["url"], str(item["sha256"]), str(item["license"]),
                                  item.get("description", ""), item.get("size_bytes"), dict(item.get("seconds", {})),
                                  item.get("intended_use", ""), dict(item.get("accuracy", {})), folder, resolved))
    return entries


def _name_problem(key: str, value) -> str:
    """Why ``value`` cannot be an entry's ``key`` (id or version), or ''. Both become a folder name in the
    cache, so anything but a plain name ('../x', 'a/b', '.hidden') is refused."""
    if isinstance(value, str) and SAFE_NAME.match(value):
        return ""
    return (f"{key} {value!r} must be letters, digits, '.', '_' or '-', starting with a letter or digit "
            f"(it names a folder in the model cache)")


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


_ABBREVIATIONS = {"dice": "Dice", "hd": "HD", "hd95": "HD95", "assd": "ASSD", "asd": "ASD", "nsd": "NSD",
                  "iou": "IoU", "msd": "MSD", "ppv": "PPV", "auc": "AUC"}
_UNITS = {"_mm": " mm", "_ml": " ml", "_s": " s", "_percent": "%", "_pct": "%"}


def _format_metric(name: str, value) -> str:
    unit = next((u for suffix, u in _UNITS.items() if name.endswith(suffix)), "")
    label = name[: -len(next(s for s in _UNITS if name.endswith(s)))] if unit else name
    words = [_ABBREVIATIONS.get(word.lower(), word) for word in label.split("_") if word]
    label = " ".join(words) or name
    label = label[0].upper() + label[1:]
    number = f"{value:.4g}" if isinstance(value, float) else str(value)
    return f"{label} {number}{unit}"


def _format_size(size: Optional[int]) -> str:
    if not size:
        return ""
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    return ""


def describe(entry: ModelEntry, cache: Optional[ModelCache] = None) -> str:
    """The panel's text for ``entry``: name and version, task, intended use, accuracy (with where it was
    measured), license, measured run time, and whether it is in ``cache`` (default: the user's cache)."""
    cache = cache if cache is not None else ModelCache()
    lines = [f"{entry.name} {entry.version}",
             f"Task: {entry.task} (input: {', '.join(entry.input_channels)})",
             f"Intended use: {entry.intended_use or 'not stated'}"]
    if entry.metrics:
        text = ", ".join(_format_metric(k, v) for k, v in entry.metrics.items())
        dataset = entry.accuracy.get("dataset")
        lines.append(f"Accuracy: {text}" + (f" (measured on {dataset})" if dataset else ""))
    else:
        lines.append("Accuracy: not stated")
    lines.append(f"License: {entry.license}")
    if entry.seconds:
        times = ", ".join(f"{v:g} s on {k.upper()}" for k, v in entry.seconds.items())
        lines.append(f"Measured run time: {times}")
    if cache.is_cached(entry):
        lines.append(f"Cached: yes ({cache.folder(entry)})")
    else:
        size = _format_size(entry.size_bytes)
        host = urllib.parse.urlsplit(entry.url).netloc or entry.url
        origin = ("shipped with the extension" if entry.shipped
                  else f"download{' of ' + size if size else ''} from {host}")
        lines.append(f"Cached: no ({origin})")
    if entry.description:
        lines.append(entry.description)
    return "\n".join(lines)
