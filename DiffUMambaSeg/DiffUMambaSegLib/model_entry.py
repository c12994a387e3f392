"""One model of the catalog, as the catalog reads it and the cache stores it: ``ModelEntry``, the checks its fields
share (plain names for what becomes a cache folder, shipped files resolved inside the catalog's folder) and
``CatalogError``. ``catalog.py`` reads the file into entries and ``model_cache.py`` fetches them; both take entries
from here, so neither imports the other to learn what an entry is.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Optional

__all__ = ["CatalogError", "ModelEntry", "resolve_url", "name_problem", "SCHEME"]

SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")   # ids and versions: they become cache folder names


class CatalogError(ValueError):
    """The catalog file is unreadable or an entry is malformed."""


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
    research_only: bool = True   # not for clinical use: never pre-selected, acknowledged before its first run

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


def name_problem(key: str, value) -> str:
    """Why ``value`` cannot be an entry's ``key`` (id or version), or ''. Both become a folder name in the
    cache, so anything but a plain name ('../x', 'a/b', '.hidden') is refused."""
    if isinstance(value, str) and SAFE_NAME.match(value):
        return ""
    return (f"{key} {value!r} must be letters, digits, '.', '_' or '-', starting with a letter or digit "
            f"(it names a folder in the model cache)")
