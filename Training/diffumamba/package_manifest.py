"""The one check of a model package (``.zip``) that everything runs before using anything in it.

A package is only as trustworthy as the manifest that lists it, so the manifest must list *every* member (folds,
plan, card, dataset.json, ...) with its SHA-256 and size: a member it does not list, a listed member that is
missing, a manifest that is malformed or absent, or a member that differs is refused, with one line naming the
package and what to do. Sizes are enforced while inflating (a member is streamed and abandoned as soon as it
exceeds the size listed for it; the manifest itself has a small cap), so a zip bomb costs a few blocks of memory,
not gigabytes. Nothing is returned before every member has been checked.

This file is standard library only and imports nothing relative, on purpose: the command line imports it as
``diffumamba.package_manifest`` (``model_package.package_members``, used by every command that reads a package),
and the Slicer module loads this very file by path from the package shipped inside the extension
(``DiffUMambaSegLib.model_cache``) without importing torch or the rest of ``diffumamba`` into Slicer's process.
One implementation, so the module and the command line cannot disagree about what a valid package is.
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
import zlib
from pathlib import PurePosixPath
from typing import Callable, Iterable, Mapping, Optional

__all__ = ["FORMAT", "MANIFEST", "PackageError", "VerifiedPackage", "fold_member", "manifest_bytes",
           "verify_package"]

FORMAT = "diffumamba-model-package/2"
OLD_FORMATS = ("diffumamba-model-package/1",)   # hashed the folds only: refused, to be re-packaged
MANIFEST = "manifest.json"
MANIFEST_LIMIT = 1 << 20        # bytes: a manifest lists a handful of members
MEMBER_LIMIT = 4 << 30          # bytes: no member may be listed (or inflate) larger, whatever the manifest says
MAX_MEMBERS = 1000
BLOCK = 1 << 20                 # inflating step: at most this much past a member's listed size is ever read
SHA256 = re.compile(r"^[0-9a-f]{64}$")
FOLD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
REPACKAGE = ("re-package it: unzip it and run `diffumamba package fold_*/model.safetensors --card MODEL_CARD.md "
             "--out NEW.zip` (an nnU-Net import: run `diffumamba import-nnunet` again)")
AGAIN = "download or copy it again, or package it again with `diffumamba package`"


class PackageError(ValueError):
    """A package refused: ``str()`` names the package; ``problem`` is the same without the name."""

    def __init__(self, shown: str, problem: str):
        super().__init__(f"{shown}: {problem}")
        self.problem = problem


class VerifiedPackage:
    """What a package holds once every member matched its manifest: the folds in order, the listed members and
    their sizes, and the bytes of the members that were asked for."""

    def __init__(self, folds: list, sizes: dict, data: dict):
        self.folds, self.sizes, self.data = folds, sizes, data


def fold_member(fold: str) -> str:
    return f"fold_{fold}/model.safetensors"


def manifest_bytes(folds: Iterable[str], files: Mapping[str, bytes]) -> bytes:
    """The manifest of a package holding ``files`` (every member but the manifest) whose folds are ``folds``."""
    manifest = {"format": FORMAT, "folds": list(folds),
                "members": {name: {"sha256": hashlib.sha256(raw).hexdigest(), "size": len(raw)}
                            for name, raw in files.items()}}
    problem = _manifest_problem(manifest)
    if problem:
        raise ValueError(f"cannot write a model package: {problem}")
    return json.dumps(manifest, indent=2).encode()


def verify_package(source, shown: Optional[str] = None,
                   keep: Callable[[str], bool] = lambda name: False) -> VerifiedPackage:
    """Check every member of the package at ``source`` (a path or a binary file) against its manifest; the
    bytes of the members for which ``keep(name)`` is true come back in ``data``. ``shown`` names the package
    in errors (default: ``source``). Raises PackageError (a ValueError) for any problem."""
    shown = str(source if shown is None else shown)
    try:
        with zipfile.ZipFile(source) as archive:
            return _verify(archive, shown, keep)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as err:
        # zipfile raises NotImplementedError for a compression method it cannot read (a foreign or damaged zip)
        raise PackageError(shown, f"not a readable model package ({err}); the file may be truncated: "
                                  "download or copy it again") from None


def _verify(archive: zipfile.ZipFile, shown: str, keep: Callable[[str], bool]) -> VerifiedPackage:
    infos = archive.infolist()
    names = [info.filename for info in infos]
    unsafe = [name for name in names if _unsafe(name)]
    if unsafe:
        raise PackageError(shown, f"refused: the zip holds paths outside itself ({unsafe[0]})")
    if len(infos) > MAX_MEMBERS:
        raise PackageError(shown, f"refused: the zip holds {len(infos)} members (a model package holds a few)")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise PackageError(shown, f"refused: the zip holds {repeated[0]} twice; {AGAIN}")
    if MANIFEST not in names:
        if not any(name.endswith(".safetensors") for name in names):
            raise PackageError(shown, "the zip holds no .safetensors checkpoint and no manifest.json: not a "
                                      "DiffUMambaSeg model package")
        raise PackageError(shown, "refused: it has no manifest.json, so its contents cannot be verified; use a "
                                  "package written by `diffumamba package` or `diffumamba import-nnunet`, or "
                                  "pass the .safetensors checkpoints themselves")
    by_name = {info.filename: info for info in infos}
    manifest = _read_manifest(archive, by_name[MANIFEST], shown)
    listed = manifest["members"]
    unlisted = sorted(set(names) - set(listed) - {MANIFEST})
    if unlisted:
        raise PackageError(shown, f"refused: {unlisted[0]} is in the zip but not in its manifest (a package may "
                                  f"hold only what its manifest lists); {AGAIN}")
    missing = sorted(set(listed) - set(names))
    if missing:
        raise PackageError(shown, f"refused: {missing[0]} is listed in its manifest but missing from the zip; "
                                  f"{AGAIN}")
    for name, expected in listed.items():        # sizes first: a bomb is refused before inflating anything
        if by_name[name].file_size != expected["size"]:
            raise PackageError(shown, f"refused: {name} inflates to {by_name[name].file_size} bytes, its manifest "
                                      f"lists {expected['size']} (damaged, or a zip bomb); {AGAIN}")
    data = {}
    for name, expected in listed.items():
        raw = _inflate(archive, by_name[name], expected["size"], expected["sha256"], shown, keep(name))
        if raw is not None:
            data[name] = raw
    return VerifiedPackage(list(manifest["folds"]), {n: e["size"] for n, e in listed.items()}, data)


def _read_manifest(archive: zipfile.ZipFile, info: zipfile.ZipInfo, shown: str) -> dict:
    if info.file_size > MANIFEST_LIMIT:
        raise PackageError(shown, f"refused: its manifest.json is {info.file_size} bytes (at most {MANIFEST_LIMIT} "
                                  f"expected); {AGAIN}")
    raw = _inflate(archive, info, MANIFEST_LIMIT, None, shown, True)
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise PackageError(shown, f"refused: its manifest.json is not valid JSON ({_short(err)}); {AGAIN}") from None
    version = manifest.get("format") if isinstance(manifest, dict) else None
    if version in OLD_FORMATS:
        raise PackageError(shown, f"refused: a {version} package, whose manifest checks the folds only; "
                                  f"{REPACKAGE}")
    if isinstance(version, str) and version.startswith("diffumamba-model-package/") and version != FORMAT:
        raise PackageError(shown, f"refused: its format {version} is not {FORMAT}, the one this version reads; "
                                  "update DiffUMambaSeg or package the model again with this version")
    problem = _manifest_problem(manifest)
    if problem:
        raise PackageError(shown, f"refused: its manifest.json is malformed ({problem}); {AGAIN}")
    return manifest


def _manifest_problem(manifest) -> str:
    """What is wrong with a parsed manifest, or ''."""
    if not isinstance(manifest, dict):
        return "not a JSON object"
    keys = {"format", "folds", "members"}
    if set(manifest) != keys:
        wrong = sorted(set(manifest) ^ keys)
        return f"{'unknown' if wrong[0] in manifest else 'missing'} key {wrong[0]!r}"
    if manifest["format"] != FORMAT:
        return f"format must be {FORMAT!r}, not {manifest['format']!r}"
    folds, members = manifest["folds"], manifest["members"]
    if not isinstance(folds, list) or not folds or not all(isinstance(f, str) and FOLD_NAME.match(f) for f in folds):
        return "folds must be a non-empty list of fold names (letters, digits, '.', '_', '-')"
    if len(set(folds)) != len(folds):
        return "a fold is listed twice"
    if not isinstance(members, dict) or not members:
        return "members must be an object: member name -> {sha256, size}"
    for name, entry in members.items():
        if name == MANIFEST or _unsafe(name) or name.endswith("/"):
            return f"member name {name!r} is not allowed"
        if not isinstance(entry, dict) or set(entry) != {"sha256", "size"}:
            return f"{name} must have exactly sha256 and size"
        if not isinstance(entry["sha256"], str) or not SHA256.match(entry["sha256"]):
            return f"{name}: sha256 must be 64 lower-case hex digits"
        size = entry["size"]
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MEMBER_LIMIT:
            return f"{name}: size must be a whole number of bytes from 0 to {MEMBER_LIMIT}"
    fold_names = {fold_member(fold) for fold in folds}
    absent = sorted(fold_names - set(members))
    if absent:
        return f"fold member {absent[0]} is not listed"
    stray = sorted(n for n in members if n.endswith(".safetensors") and n not in fold_names)
    if stray:
        return f"{stray[0]} is a checkpoint but not one of the folds"
    return ""


def _inflate(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, sha256: Optional[str], shown: str,
             keep: bool) -> Optional[bytes]:
    """Stream one member, stopping once it exceeds ``limit`` bytes; check its SHA-256 when one is given."""
    digest, size, parts = hashlib.sha256(), 0, []
    try:
        with archive.open(info) as stream:
            while True:
                block = stream.read(min(BLOCK, limit + 1 - size))
                if not block:
                    break
                size += len(block)
                if size > limit:
                    raise PackageError(shown, f"refused: {info.filename} inflates to more than the {limit} bytes "
                                              f"allowed (damaged, or a zip bomb); {AGAIN}")
                digest.update(block)
                if keep:
                    parts.append(block)
    except RuntimeError as err:              # zipfile: an encrypted member needs a password
        raise PackageError(shown, f"refused: {info.filename} cannot be read ({err})") from None
    if sha256 is not None and (size != limit or digest.hexdigest() != sha256):
        raise PackageError(shown, f"{info.filename} does not match the package's manifest (damaged); {AGAIN}")
    return b"".join(parts) if keep else None


def _unsafe(name: str) -> bool:
    """A member name that is absolute, climbs with '..' or uses backslashes or drive letters."""
    path = PurePosixPath(name)
    return not name or path.is_absolute() or ".." in path.parts or "\\" in name or ":" in name


def _short(err: BaseException) -> str:
    return (str(err) or type(err).__name__).splitlines()[0][:120]
