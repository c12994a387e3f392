"""The Slicer module's model catalog: entries validated, downloads and offline imports verified by SHA-256,
a mismatch refused with nothing left in the cache, zips unpacked safely."""

import hashlib
import json
import sys
import zipfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "DiffUMambaSeg"))

from DiffUMambaSegLib.catalog import CatalogError, ChecksumError, ModelCache, load_catalog  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def write_catalog(path, **overrides):
    entry = {"id": "gtv-lung", "name": "Lung GTV", "version": "1.0.0", "task": "segmentation",
             "input_channels": ["CT"], "url": "https://example.org/gtv.safetensors", "sha256": "0" * 64,
             "license": "CC-BY-4.0", "seconds": {"cpu": 34}}
    entry.update(overrides)
    path.write_text(json.dumps({"models": [entry]}))
    return path


def model_file(tmp_path, content=b"weights"):
    path = tmp_path / "source" / "model.safetensors"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content)
    return path, hashlib.sha256(content).hexdigest()


def test_the_shipped_catalog_and_its_schema_parse():
    entries = load_catalog(REPO / "DiffUMambaSeg" / "Resources" / "Models.json")
    assert {e.task for e in entries} <= {"segmentation", "propagation"}   # no model is published yet
    schema = json.loads((REPO / "DiffUMambaSeg" / "Resources" / "Models-schema.json").read_text())
    assert set(schema["properties"]["models"]["items"]["required"]) == {
        "id", "name", "version", "task", "input_channels", "url", "sha256", "license"}


@pytest.mark.parametrize("change, message", [
    ({"sha256": "abc"}, "sha256 must be 64"), ({"task": "detection"}, "task must be one of"),
    ({"input_channels": []}, "input_channels must be"), ({"url": None, "license": None}, None)])
def test_bad_entries_are_named(tmp_path, change, message):
    path = write_catalog(tmp_path / "Models.json", **change)
    if message is None:                                           # a missing key, not a null one
        data = json.loads(path.read_text())
        del data["models"][0]["url"], data["models"][0]["license"]
        path.write_text(json.dumps(data))
        message = "missing url, license"
    with pytest.raises(CatalogError, match=f"model 1 \\(gtv-lung\\): {message}"):
        load_catalog(path)


def test_bad_json_is_refused(tmp_path):
    (tmp_path / "Models.json").write_text("{not json")
    with pytest.raises(CatalogError, match="cannot read the model catalog"):
        load_catalog(tmp_path / "Models.json")
    (tmp_path / "Models.json").write_text("[]")
    with pytest.raises(CatalogError, match="'models' list"):
        load_catalog(tmp_path / "Models.json")


def test_download_is_verified_and_cached(tmp_path):
    source, digest = model_file(tmp_path)
    entry = load_catalog(write_catalog(tmp_path / "Models.json", url=source.as_uri(), sha256=digest))[0]
    cache = ModelCache(tmp_path / "cache")
    assert not cache.is_cached(entry)
    seen = []
    paths = cache.download(entry, progress=lambda done, total: seen.append(done))
    assert [p.read_bytes() for p in paths] == [b"weights"] and cache.is_cached(entry) and seen[-1] == 7
    source.unlink()                                                # cached: no second download
    assert cache.download(entry) == paths


def test_a_checksum_mismatch_is_refused_and_leaves_nothing(tmp_path):
    source, digest = model_file(tmp_path, b"tampered")
    entry = load_catalog(write_catalog(tmp_path / "Models.json", url=source.as_uri(), sha256="1" * 64))[0]
    cache = ModelCache(tmp_path / "cache")
    with pytest.raises(ChecksumError, match="was not installed"):
        cache.download(entry)
    with pytest.raises(ChecksumError, match=f"its SHA-256 is {digest}"):
        cache.import_file(entry, source)
    assert not cache.is_cached(entry) and not any((tmp_path / "cache").iterdir())


def test_offline_zip_import(tmp_path):
    bundle = tmp_path / "gtv.zip"
    with zipfile.ZipFile(bundle, "w") as archive:
        for fold in range(2):
            archive.writestr(f"folds/fold{fold}.safetensors", f"fold {fold}")
    digest = hashlib.sha256(bundle.read_bytes()).hexdigest()
    entry = load_catalog(write_catalog(tmp_path / "Models.json", url="https://example.org/gtv.zip", sha256=digest))[0]
    paths = ModelCache(tmp_path / "cache").import_file(entry, bundle)
    assert [p.name for p in paths] == ["fold0.safetensors", "fold1.safetensors"]
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("../outside.safetensors", "x")
    digest = hashlib.sha256(evil.read_bytes()).hexdigest()
    entry = load_catalog(write_catalog(tmp_path / "Models.json", url="https://example.org/e.zip", sha256=digest))[0]
    with pytest.raises(ChecksumError, match="unsafe path"):
        ModelCache(tmp_path / "cache2").import_file(entry, evil)
    assert not (tmp_path / "outside.safetensors").exists()
