"""Model packages for tests: written without torch, turned into zip bombs, and a count of what a reader inflates.

``write_package`` writes the documented layout itself (docs/model_catalog.md), without torch and without the code
under test, so a test of the Slicer cache needs no trained model. A bomb keeps the package's manifest (which lists
the real, small size of a member) and replaces that member by hundreds of megabytes of zeros, which deflate to a few
hundred kilobytes: small and quick to write, costly only to a reader that inflates before it checks. Counting the
bytes ``zipfile`` hands out measures how far a reader got, independent of timing and of the machine's memory.
"""

import collections
import hashlib
import json
import zipfile
from pathlib import Path

MB = 1 << 20


def write_package(path: Path, folds: dict, extra: dict = None) -> Path:
    """A model package of ``folds`` (fold name -> checkpoint bytes) and ``extra`` files, with its manifest."""
    files = {f"fold_{name}/model.safetensors": raw for name, raw in folds.items()}
    files.update({"plan.json": b"{}"} if extra is None else extra)
    manifest = {"format": "diffumamba-model-package/2", "folds": list(folds),
                "members": {name: {"sha256": hashlib.sha256(raw).hexdigest(), "size": len(raw)}
                            for name, raw in files.items()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.json", json.dumps(manifest))
        for name, raw in files.items():
            archive.writestr(name, raw)
    return path


def write_bomb(package: Path, out: Path, member: str, megabytes: int = 200, forge: bool = False) -> int:
    """``package`` with ``member`` replaced by ``megabytes`` MB of zeros; returns the size the manifest lists for
    it. ``forge``: the zip's directory also claims that listed size (a lying bomb: only the data is large)."""
    with zipfile.ZipFile(package) as source, zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as bomb:
        listed = source.getinfo(member).file_size
        for info in source.infolist():
            if info.filename != member:
                bomb.writestr(info.filename, source.read(info.filename))
                continue
            with bomb.open(member, "w") as stream:
                block = bytes(MB)
                for _ in range(megabytes):
                    stream.write(block)
    if forge:
        _forge_size(out, member, listed)
    return listed


def _forge_size(path: Path, member: str, size: int) -> None:
    """Write ``size`` as ``member``'s uncompressed size in the central directory and its local header."""
    raw = bytearray(path.read_bytes())
    end = raw.rfind(b"PK\x05\x06")
    count = int.from_bytes(raw[end + 10:end + 12], "little")
    position = int.from_bytes(raw[end + 16:end + 20], "little")
    for _ in range(count):
        assert raw[position:position + 4] == b"PK\x01\x02"
        lengths = [int.from_bytes(raw[position + o:position + o + 2], "little") for o in (28, 30, 32)]
        if raw[position + 46:position + 46 + lengths[0]].decode() == member:
            raw[position + 24:position + 28] = size.to_bytes(4, "little")
            local = int.from_bytes(raw[position + 42:position + 46], "little")
            raw[local + 22:local + 26] = size.to_bytes(4, "little")
        position += 46 + sum(lengths)
    path.write_bytes(bytes(raw))


def count_inflated(monkeypatch) -> collections.Counter:
    """member name -> bytes ``zipfile`` inflated and returned for it from now on (every reader goes through
    ``ZipExtFile.read``: ``ZipFile.read``, ``extractall`` and streaming alike)."""
    counts = collections.Counter()
    real = zipfile.ZipExtFile.read

    def read(self, n=-1):
        data = real(self, n)
        counts[self.name] += len(data)
        return data

    monkeypatch.setattr(zipfile.ZipExtFile, "read", read)
    return counts
