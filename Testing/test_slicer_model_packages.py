"""The Slicer model cache and model packages (issue 28): a package is verified against its manifest before it is
installed, with the command line's own check; it is kept as the zip, which the command line verifies again on every
run; a zip bomb is refused before it is inflated; a package unpacked into the cache by an earlier release is
installed again; a full disk names the file and the cache."""

import errno
import hashlib
import os
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "DiffUMambaSeg"))

from DiffUMambaSegLib import model_cache  # noqa: E402
from DiffUMambaSegLib.catalog import load_catalog  # noqa: E402
from DiffUMambaSegLib.model_cache import ModelCache, ModelFileError  # noqa: E402
from package_files import MB, count_inflated, write_bomb, write_package  # noqa: E402

FOLD = "fold_0/model.safetensors"


def checkpoint_bytes(tmp_path, seed=0):
    path = tmp_path / f"w{seed}.safetensors"
    rng = np.random.default_rng(seed)
    save_file({"encoder.weight": rng.normal(size=(4, 1, 3, 3, 3)).astype(np.float32)}, str(path))
    return path.read_bytes()


def catalog_entry(tmp_path, path, version="1.0.0"):
    catalog = tmp_path / f"Models-{version}.json"
    catalog.write_text('{"models": [{"id": "gtv", "name": "GTV", "version": "%s", "task": "segmentation", '
                       '"input_channels": ["CT"], "url": "%s", "sha256": "%s", "license": "CC-BY-4.0"}]}'
                       % (version, path.as_uri(), hashlib.sha256(path.read_bytes()).hexdigest()))
    return load_catalog(catalog)[0]


def cache_files(cache):
    return sorted(p for p in cache.root.rglob("*") if p.is_file()) if cache.root.exists() else []


def tampered(package, out, member=FOLD):
    """``package`` with the last byte of ``member`` changed: the manifest kept, so the member no longer matches it."""
    with zipfile.ZipFile(package) as source, zipfile.ZipFile(out, "w") as copy:
        for name in source.namelist():
            data = source.read(name)
            copy.writestr(name, data[:-1] + bytes([data[-1] ^ 1]) if name == member else data)
    return out


def test_a_package_whose_fold_fails_its_manifest_is_refused_and_nothing_is_cached(tmp_path):
    good = write_package(tmp_path / "good.zip", {"0": checkpoint_bytes(tmp_path)})
    bad = tampered(good, tmp_path / "bad.zip")
    cache = ModelCache(tmp_path / "cache")
    with pytest.raises(ModelFileError, match=f"cannot import bad.zip: {FOLD} does not match the package's manifest"):
        cache.import_local(bad)
    entry = catalog_entry(tmp_path, bad)             # the catalog's SHA-256 is the tampered file's own
    with pytest.raises(ModelFileError, match=f"GTV 1.0.0 from file://.*/bad.zip: {FOLD} does not match"):
        cache.download(entry)
    with pytest.raises(ModelFileError, match=f"bad.zip \\(GTV 1.0.0\\): {FOLD} does not match"):
        cache.import_file(entry, bad)
    assert cache_files(cache) == [] and cache.imported() == {} and not cache.is_cached(entry)


@pytest.mark.parametrize("forge", [False, True])
def test_a_zip_bomb_is_refused_before_it_is_inflated_or_copied_out(tmp_path, monkeypatch, forge):
    """D14: the cache extracted such a zip until the disk was full."""
    package = write_package(tmp_path / "good.zip", {"0": checkpoint_bytes(tmp_path)})
    listed = write_bomb(package, tmp_path / "bomb.zip", FOLD, megabytes=200, forge=forge)
    inflated = count_inflated(monkeypatch)
    cache = ModelCache(tmp_path / "cache")
    with pytest.raises(ModelFileError, match="cannot import bomb.zip: " + ("not a readable" if forge else
                                                                           "refused: .* a zip bomb")):
        cache.import_local(tmp_path / "bomb.zip")
    assert inflated[FOLD] <= listed < MB, inflated
    assert cache_files(cache) == []


def test_the_cache_keeps_the_verified_zip_and_reinstalls_an_unpacked_one(tmp_path):
    """A folder an earlier release filled by unpacking the package is not used: nothing in it was checked
    against the manifest."""
    package = write_package(tmp_path / "gtv.zip", {"0": checkpoint_bytes(tmp_path)})
    entry = catalog_entry(tmp_path, package)
    cache = ModelCache(tmp_path / "cache")
    old = cache.folder(entry)
    (old / "fold_0").mkdir(parents=True)
    (old / "fold_0" / "model.safetensors").write_bytes(b"unpacked, never checked")
    (old / "VERIFIED").write_text(entry.sha256 + "\n")
    assert not cache.is_cached(entry) and cache.checkpoints(entry) == []
    paths = cache.download(entry)
    assert paths == [old / "gtv-1.0.0.zip"] and paths[0].read_bytes() == package.read_bytes()
    assert sorted(p.name for p in old.iterdir()) == ["VERIFIED", "gtv-1.0.0.zip"] and cache.is_cached(entry)

    digest = hashlib.sha256(package.read_bytes()).hexdigest()     # the same for a user's own import
    local = cache.root / "local" / f"gtv-{digest[:12]}"
    (local / "fold_0").mkdir(parents=True)
    (local / "fold_0" / "model.safetensors").write_bytes(b"unpacked, never checked")
    (local / "VERIFIED").write_text(digest + "\n")
    assert cache.import_local(package) == [local / "gtv.zip"]
    assert sorted(p.name for p in local.iterdir()) == ["VERIFIED", "gtv.zip"]


def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("name", ["mine.safetensors", "mine.zip"])
def test_a_full_disk_while_importing_names_the_file_and_the_cache(tmp_path, monkeypatch, name):
    source = tmp_path / name
    if name.endswith(".zip"):
        write_package(source, {"0": checkpoint_bytes(tmp_path)})
    else:
        source.write_bytes(checkpoint_bytes(tmp_path))
    cache = ModelCache(tmp_path / "cache")
    monkeypatch.setattr(model_cache.shutil, "copyfile", disk_full)
    with pytest.raises(OSError) as raised:
        cache.import_local(source)
    message = str(raised.value)
    assert message.startswith(f"could not write {name} into the model cache {cache.root}: No space left on device")
    assert len(message.splitlines()) == 1 and raised.value.errno == errno.ENOSPC
    assert cache_files(cache) == []


def test_a_full_disk_while_downloading_names_the_file_and_the_cache(tmp_path, monkeypatch):
    source = tmp_path / "gtv.safetensors"
    source.write_bytes(checkpoint_bytes(tmp_path))
    entry = catalog_entry(tmp_path, source)
    real_open = open

    class Full:
        def __init__(self, handle):
            self.handle = handle

        def write(self, block):
            disk_full()

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    monkeypatch.setattr(model_cache, "open", lambda path, mode="r", *a, **k: Full(real_open(path, mode, *a, **k))
                        if "w" in mode else real_open(path, mode, *a, **k), raising=False)
    cache = ModelCache(tmp_path / "cache")
    with pytest.raises(OSError, match=f"^could not write gtv-1.0.0.safetensors into the model cache {cache.root}: "
                                      "No space left on device; free space there"):
        cache.download(entry)
    assert cache_files(cache) == []


def test_the_command_line_runs_the_cached_zip_and_checks_it_again_on_every_run(tmp_path, capsys):
    from conftest import train_tiny, write_phantoms
    from diffumamba.cli import main

    dataset = write_phantoms(tmp_path / "Dataset900_Phantom")
    checkpoint = train_tiny(dataset, tmp_path)
    assert main(["package", str(checkpoint), "--out", str(tmp_path / "model.zip")]) == 0
    cache = ModelCache(tmp_path / "cache")
    models = cache.import_local(tmp_path / "model.zip")
    assert [p.suffix for p in models] == [".zip"]
    image = str(dataset / "imagesTr" / "c0_0000.nii.gz")
    assert main(["predict", image, "--model", *map(str, models), "--out", str(tmp_path / "seg"),
                 "--progress", "none"]) == 0
    assert (tmp_path / "seg" / "c0.nii.gz").is_file()
    fold = "fold_all/model.safetensors"                   # the cached copy altered after it was imported
    os.replace(tampered(models[0], tmp_path / "t.zip", fold), models[0])
    capsys.readouterr()
    assert main(["predict", image, "--model", str(models[0]), "--out", str(tmp_path / "seg2"),
                 "--progress", "none"]) == 2
    assert f"{fold} does not match the package's manifest" in capsys.readouterr().err
    assert not (tmp_path / "seg2").exists()
