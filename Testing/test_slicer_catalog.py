"""The Slicer module's model catalog: entries validated, downloads and offline imports verified by SHA-256,
a mismatch refused with nothing left in the cache, packages verified against their manifest and kept as the zip,
shipped files resolved inside the catalog's folder, a user's own checkpoints imported, downloads run in a
background thread with progress and cancel. Real files, real SHA-256, real HTTP on 127.0.0.1."""

import dataclasses
import hashlib
import http.server
import json
import os
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "DiffUMambaSeg"))

from DiffUMambaSegLib.catalog import CatalogError, describe, for_task, load_catalog, version_key  # noqa: E402
from DiffUMambaSegLib.model_cache import ChecksumError, ModelCache, ModelFileError, package_verifier  # noqa: E402
from DiffUMambaSegLib.model_download import DownloadJob  # noqa: E402
from package_files import write_package  # noqa: E402

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
    assert {e.task for e in entries} <= {"segmentation", "propagation", "correction"}
    for entry in entries:                  # every shipped file: there, as listed, verified, of the entry's task
        if not entry.shipped:
            continue
        shipped = REPO / "DiffUMambaSeg" / "Resources" / entry.url
        assert shipped.is_file() and shipped.stat().st_size == entry.size_bytes, entry.id
        assert hashlib.sha256(shipped.read_bytes()).hexdigest() == entry.sha256, entry.id
        if shipped.suffix == ".zip":
            package_verifier().verify_package(shipped)
            assert json.loads(zipfile.ZipFile(shipped).read("plan.json"))["task"] == entry.task, entry.id
    preview = [e for e in entries if e.task == "segmentation"][0]           # listed first, never pre-selected
    assert preview.id == "gtv-lung-preview" and preview.shipped
    assert all(e.research_only for e in entries)                            # the review's W13: both say so
    shipped = REPO / "DiffUMambaSeg" / "Resources" / preview.url
    assert shipped.stat().st_size <= 20e6 and shipped.stat().st_size == preview.size_bytes
    assert hashlib.sha256(shipped.read_bytes()).hexdigest() == preview.sha256
    assert "not for clinical use" in preview.intended_use.lower() and preview.license.startswith("CC-BY-NC")
    assert set(preview.metrics) >= {"dice", "hd95_mm"} and "leave-one-patient-out" in preview.accuracy["dataset"]
    package_verifier().verify_package(shipped)                  # every member matches the package's manifest
    card = zipfile.ZipFile(shipped).read("MODEL_CARD.md").decode()
    assert "Research model, not for clinical use" in card and f"{preview.metrics['dice']:.3f}" in card
    assert card == (REPO / "docs" / "lung_gtv_model.md").read_text()   # the shipped card is the documented one
    schema = json.loads((REPO / "DiffUMambaSeg" / "Resources" / "Models-schema.json").read_text())
    assert set(schema["properties"]["models"]["items"]["required"]) == {
        "id", "name", "version", "task", "input_channels", "url", "sha256", "license"}


def test_correction_models_are_a_task_of_their_own_with_the_highest_version_the_default(tmp_path):
    """Issue 29: the click model list offers the catalog's correction models, the highest version first (the first
    listed among equal versions); the segmentation list never offers one, nor the click list a segmentation model."""
    def entry(id, version, task):
        return {"id": id, "name": id, "version": version, "task": task, "input_channels": ["CT"],
                "url": f"Models/{id}-{version}.zip", "sha256": "0" * 64, "license": "CC-BY-4.0"}

    (tmp_path / "Models.json").write_text(json.dumps({"models": [
        entry("gtv-lung", "1.0.0", "segmentation"), entry("click-lesion", "0.9.0", "correction"),
        entry("click-lesion", "0.10.0", "correction"), entry("click-other", "0.10.0", "correction"),
        entry("gtv-lung", "2.0.0", "segmentation"), entry("prior", "1.0", "propagation")]}))
    entries = load_catalog(tmp_path / "Models.json")
    shown = [(e.id, e.version) for e in for_task(entries, "correction")]
    assert shown == [("click-lesion", "0.10.0"), ("click-lesion", "0.9.0"), ("click-other", "0.10.0")]
    shown = [(e.id, e.version) for e in for_task(entries, "segmentation")]
    assert shown == [("gtv-lung", "2.0.0"), ("gtv-lung", "1.0.0")]
    assert for_task(entries[:1], "correction") == [] and for_task([], "segmentation") == []
    assert "Task: correction (input: CT)" in describe(for_task(entries, "correction")[0], ModelCache(tmp_path / "c"))
    assert sorted(["1.0.0", "0.10.0", "1.0.0rc1", "0.9.1", "1.0"], key=version_key) == [
        "0.9.1", "0.10.0", "1.0", "1.0.0rc1", "1.0.0"]
    semantic = ["0.10.0", "1.0.0", "0.2.0", "1.0.0-rc.1", "1.0.0-alpha", "1.0.0-alpha.2", "1.0.0-rc.10"]
    assert sorted(semantic, key=version_key) == ["0.2.0", "0.10.0", "1.0.0-alpha", "1.0.0-alpha.2", "1.0.0-rc.1",
                                                 "1.0.0-rc.10", "1.0.0"]   # as the command line's built-in lookup
    schema = json.loads((REPO / "DiffUMambaSeg" / "Resources" / "Models-schema.json").read_text())
    assert "correction" in schema["properties"]["models"]["items"]["properties"]["task"]["enum"]


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
    """A package is installed as the verified zip itself (the command line checks it again on every run)."""
    bundle = write_package(tmp_path / "gtv.zip", {str(fold): f"fold {fold}".encode() for fold in range(2)})
    digest = hashlib.sha256(bundle.read_bytes()).hexdigest()
    entry = load_catalog(write_catalog(tmp_path / "Models.json", url="https://example.org/gtv.zip", sha256=digest))[0]
    cache = ModelCache(tmp_path / "cache")
    paths = cache.import_file(entry, bundle)
    assert paths == [cache.folder(entry) / "gtv-lung-1.0.0.zip"] and paths[0].read_bytes() == bundle.read_bytes()
    assert cache.is_cached(entry) and cache.checkpoints(entry) == paths
    assert sorted(p.name for p in cache.folder(entry).iterdir()) == ["VERIFIED", "gtv-lung-1.0.0.zip"]  # not unpacked
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("../outside.safetensors", "x")
    digest = hashlib.sha256(evil.read_bytes()).hexdigest()
    entry = load_catalog(write_catalog(tmp_path / "Models.json", url="https://example.org/e.zip", sha256=digest))[0]
    with pytest.raises(ModelFileError, match="paths outside itself"):
        ModelCache(tmp_path / "cache2").import_file(entry, evil)
    assert not (tmp_path / "outside.safetensors").exists()
    assert not [p for p in (tmp_path / "cache2").rglob("*") if p.is_file()]


# --- intended use, accuracy, describe() -------------------------------------------------------------------

ACCURACY = {"dice": 0.71, "hd95_mm": 5.5, "dataset": "NSCLC-Radiomics LUNG1, 84 held-out patients"}


def test_intended_use_and_accuracy_load(tmp_path):
    entry = load_catalog(write_catalog(tmp_path / "Models.json", intended_use="Lung GTV on planning CT, adults",
                                       accuracy=ACCURACY))[0]
    assert entry.intended_use == "Lung GTV on planning CT, adults" and entry.accuracy == ACCURACY
    assert entry.metrics == {"dice": 0.71, "hd95_mm": 5.5}
    plain = load_catalog(write_catalog(tmp_path / "Models.json"))[0]      # both stay optional
    assert plain.intended_use == "" and plain.accuracy == {}
    schema = json.loads((REPO / "DiffUMambaSeg" / "Resources" / "Models-schema.json").read_text())
    fields = schema["properties"]["models"]["items"]["properties"]
    assert fields["intended_use"]["type"] == "string" and fields["accuracy"]["type"] == "object"
    assert fields["accuracy"]["additionalProperties"] == {"type": "number"}


@pytest.mark.parametrize("change, message", [
    ({"accuracy": {"dice": "0.7"}}, "accuracy values must be numbers, not dice='0.7'"),
    ({"accuracy": {"dice": True}}, "accuracy values must be numbers"),
    ({"accuracy": [0.7]}, "accuracy must be an object"),
    ({"accuracy": {"dice": 0.7, "dataset": 5}}, "accuracy.dataset must be text"),
    ({"accuracy": {"dataset": "LUNG1"}}, "accuracy names no metric"),
    ({"intended_use": ["CT"]}, "intended_use must be text")])
def test_bad_accuracy_and_intended_use_are_named(tmp_path, change, message):
    with pytest.raises(CatalogError, match=f"model 1 \\(gtv-lung\\): {message}"):
        load_catalog(write_catalog(tmp_path / "Models.json", **change))


def test_a_model_is_research_only_unless_its_entry_says_otherwise(tmp_path):
    """The review's W13: what the panel must not pre-select and must have acknowledged; stated, never guessed."""
    assert load_catalog(write_catalog(tmp_path / "Models.json"))[0].research_only
    assert load_catalog(write_catalog(tmp_path / "Models.json", research_only=True))[0].research_only
    assert not load_catalog(write_catalog(tmp_path / "Models.json", research_only=False))[0].research_only
    with pytest.raises(CatalogError, match="research_only must be true or false"):
        load_catalog(write_catalog(tmp_path / "Models.json", research_only="no"))


def test_describe_gives_the_panel_text(tmp_path):
    source, digest = model_file(tmp_path)
    entry = load_catalog(write_catalog(tmp_path / "Models.json", url=source.as_uri(), sha256=digest,
                                       intended_use="Lung GTV on planning CT", accuracy=ACCURACY,
                                       seconds={"cpu": 34, "gpu": 6}))[0]
    cache = ModelCache(tmp_path / "cache")
    text = describe(entry, cache)
    lines = text.splitlines()
    assert lines[0] == "Lung GTV 1.0.0 (research model, not for clinical use)"
    assert "Task: segmentation (input: CT)" in lines
    assert "Intended use: Lung GTV on planning CT" in lines and "License: CC-BY-4.0" in lines
    accuracy = next(line for line in lines if line.startswith("Accuracy:"))
    assert "Dice 0.71" in accuracy and "HD95 5.5 mm" in accuracy
    assert "NSCLC-Radiomics LUNG1, 84 held-out patients" in accuracy
    assert "34 s on CPU" in text and "6 s on GPU" in text
    assert "Cached: no" in text
    cache.download(entry)
    assert "Cached: yes" in describe(entry, cache)
    bare = load_catalog(write_catalog(tmp_path / "Models.json", version="2.0.0", seconds={}))[0]
    text = describe(bare, cache)
    assert "Intended use: not stated" in text and "Accuracy: not stated" in text and "run time" not in text
    assert "Cached: no (download from example.org)" in text            # where it would come from


# --- files shipped inside the extension ---------------------------------------------------------------------

def shipped_catalog(tmp_path, url="Models/tiny.safetensors", content=b"shipped weights"):
    resources = tmp_path / "Resources"
    (resources / "Models").mkdir(parents=True)
    (resources / "Models" / "tiny.safetensors").write_bytes(content)
    return write_catalog(resources / "Models.json", url=url, sha256=hashlib.sha256(content).hexdigest())


def test_a_relative_url_is_a_file_beside_the_catalog(tmp_path, monkeypatch):
    catalog = shipped_catalog(tmp_path)
    decoy = tmp_path / "elsewhere"                       # the working folder must not matter
    (decoy / "Models").mkdir(parents=True)
    (decoy / "Models" / "tiny.safetensors").write_bytes(b"decoy")
    monkeypatch.chdir(decoy)
    entry = load_catalog(catalog)[0]
    assert entry.url == "Models/tiny.safetensors" and entry.shipped
    assert entry.resolved_url == (tmp_path / "Resources" / "Models" / "tiny.safetensors").resolve().as_uri()
    cache = ModelCache(tmp_path / "cache")
    seen = []
    paths = cache.download(entry, progress=lambda done, total: seen.append((done, total)))
    assert [p.read_bytes() for p in paths] == [b"shipped weights"] and cache.is_cached(entry)
    assert seen[-1] == (15, 15)
    assert "shipped with the extension" in describe(dataclasses.replace(entry, id="other"), cache)


def test_a_tampered_shipped_file_is_refused(tmp_path):
    entry = load_catalog(shipped_catalog(tmp_path))[0]
    (tmp_path / "Resources" / "Models" / "tiny.safetensors").write_bytes(b"replaced")
    with pytest.raises(ChecksumError, match="was not installed"):
        ModelCache(tmp_path / "cache").download(entry)


@pytest.mark.parametrize("url", ["../secret.safetensors", "Models/../../secret.safetensors", "/etc/secret.safetensors",
                                 "..\\secret.safetensors"])
def test_a_shipped_path_outside_the_catalog_folder_is_refused(tmp_path, url):
    (tmp_path / "secret.safetensors").write_bytes(b"shipped weights")
    catalog = shipped_catalog(tmp_path, url=url)
    with pytest.raises(CatalogError, match="model 1 \\(gtv-lung\\): url .*(climbs out|relative to the catalog)"):
        load_catalog(catalog)
    good = load_catalog(shipped_catalog(tmp_path / "ok"))[0]          # an entry built by hand is checked too
    cache = ModelCache(tmp_path / "cache")
    with pytest.raises(CatalogError, match="climbs out|relative to the catalog"):
        cache.download(dataclasses.replace(good, url=url))
    assert not cache.root.exists() or not any(cache.root.iterdir())


# --- a user's own checkpoint, without a catalog entry -------------------------------------------------------

def real_checkpoint(path, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    save_file({"encoder.weight": rng.normal(size=(4, 1, 3, 3, 3)).astype(np.float32),
               "head.bias": rng.normal(size=2).astype(np.float32)}, str(path))
    return path


def test_import_local_safetensors_is_idempotent_and_keyed_by_content(tmp_path):
    cache = ModelCache(tmp_path / "cache")
    source = real_checkpoint(tmp_path / "mine" / "my model.safetensors")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    paths = cache.import_local(source)
    assert len(paths) == 1 and paths[0].parent.name == f"my_model-{digest[:12]}"
    assert paths[0].read_bytes() == source.read_bytes()
    assert load_file(str(paths[0]))["head.bias"].shape == (2,)
    stamp = paths[0].stat().st_mtime_ns
    assert cache.import_local(source) == paths and paths[0].stat().st_mtime_ns == stamp   # no second copy
    other = real_checkpoint(tmp_path / "other" / "my model.safetensors", seed=1)          # same name, new file
    others = cache.import_local(other)
    assert others != paths and others[0].read_bytes() == other.read_bytes() and paths[0].is_file()
    assert sorted(cache.imported()) == sorted([paths[0].parent.name, others[0].parent.name])
    assert not [p for p in (tmp_path / "cache" / "local").iterdir() if p.name.startswith(".")]


def test_import_local_package(tmp_path):
    folds = [real_checkpoint(tmp_path / "run" / f"fold{i}" / "best.safetensors", seed=i) for i in range(2)]
    bundle = write_package(tmp_path / "my folds.zip", {str(i): fold.read_bytes() for i, fold in enumerate(folds)})
    digest = hashlib.sha256(bundle.read_bytes()).hexdigest()
    cache = ModelCache(tmp_path / "cache")
    paths = cache.import_local(bundle)
    assert paths == [tmp_path / "cache" / "local" / f"my_folds-{digest[:12]}" / "my_folds.zip"]
    assert paths[0].read_bytes() == bundle.read_bytes()
    assert cache.import_local(bundle) == paths and cache.imported() == {paths[0].parent.name: paths}
    loose = tmp_path / "loose.zip"                      # folds zipped by hand: nothing says what belongs in it
    with zipfile.ZipFile(loose, "w") as archive:
        for i, fold in enumerate(folds):
            archive.write(fold, f"fold{i}/best.safetensors")
    with pytest.raises(ModelFileError, match="cannot import loose.zip: refused: it has no manifest.json"):
        cache.import_local(loose)
    assert list((tmp_path / "cache" / "local").iterdir()) == [paths[0].parent]


def test_import_local_refuses_other_files(tmp_path):
    cache = ModelCache(tmp_path / "cache")
    pickle = tmp_path / "model.pt"
    pickle.write_bytes(b"\x80\x04\x95 a pickle")
    with pytest.raises(ModelFileError, match="cannot import model.pt: expected a .safetensors checkpoint or a "
                                             "model package .zip .*never loaded"):
        cache.import_local(pickle)
    renamed = tmp_path / "renamed.safetensors"
    renamed.write_bytes(b"\x80\x04\x95" + b"\x00" * 64)                 # a pickle given a safetensors name
    with pytest.raises(ModelFileError, match="cannot import renamed.safetensors: it is not a safetensors file"):
        cache.import_local(renamed)
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("readme.txt", "no weights")
    with pytest.raises(ModelFileError, match="cannot import empty.zip: the zip holds no .safetensors checkpoint and no "
                                             "manifest.json"):
        cache.import_local(empty)
    with pytest.raises(FileNotFoundError, match="no such model file"):
        cache.import_local(tmp_path / "missing.safetensors")
    assert cache.imported() == {} and not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


def test_import_local_refuses_zip_slip(tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.write(real_checkpoint(tmp_path / "w.safetensors"), "ok.safetensors")
        archive.writestr("../../outside.safetensors", "x")
    cache = ModelCache(tmp_path / "cache")
    with pytest.raises(ModelFileError, match="evil.zip: refused: the zip holds paths outside itself "
                                             "\\(../../outside.safetensors\\)"):
        cache.import_local(evil)
    assert not (tmp_path / "outside.safetensors").exists() and not (tmp_path / "cache" / "outside.safetensors").exists()
    assert cache.imported() == {} and not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


# --- background download: progress, result, checksum error, cancel -----------------------------------------

@pytest.fixture
def slow_server():
    """An HTTP server on 127.0.0.1 serving ``files[name] = (bytes, chunk, pause)`` in chunks with pauses."""
    files, stop = {}, threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            content, chunk, pause = files[self.path.lstrip("/")]
            self.send_response(200)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            try:
                for start in range(0, len(content), chunk):
                    if stop.is_set():
                        return
                    self.wfile.write(content[start:start + chunk])
                    self.wfile.flush()
                    time.sleep(pause)
            except (BrokenPipeError, ConnectionResetError):
                pass                                                    # the client hung up: cancelled

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield files, f"http://127.0.0.1:{server.server_address[1]}"
    stop.set()
    server.shutdown()
    server.server_close()


def http_entry(tmp_path, url, content, sha256=None):
    return load_catalog(write_catalog(tmp_path / "Models.json", url=url,
                                      sha256=sha256 or hashlib.sha256(content).hexdigest()))[0]


def test_download_job_reports_progress_and_finishes(tmp_path, slow_server):
    files, base = slow_server
    content = real_checkpoint(tmp_path / "w.safetensors").read_bytes() + b"\0" * 20_000  # ~20 KB, 10 chunks
    files["gtv.safetensors"] = (content, -(-len(content) // 10), 0.05)
    entry = http_entry(tmp_path, f"{base}/gtv.safetensors", content)
    cache = ModelCache(tmp_path / "cache")
    job = DownloadJob(cache, entry).start()
    seen = []
    while (result := job.poll()) is None:
        seen.append(job.progress())
        time.sleep(0.005)
    assert result.ok and not result.cancelled and result.error == ""
    assert [p.read_bytes() for p in result.checkpoints] == [content] and cache.is_cached(entry)
    assert job.progress() == (len(content), len(content))
    partial = sorted({done for done, total in seen if 0 < done < len(content)})
    assert len(partial) >= 3 and all(total == len(content) for done, total in seen if done)
    assert DownloadJob(cache, entry).start().wait(5).checkpoints == result.checkpoints   # cached: at once


def test_download_job_wrong_checksum_ends_with_an_error_and_an_empty_cache(tmp_path, slow_server):
    files, base = slow_server
    files["bad.safetensors"] = (b"not the model" * 100, 400, 0.0)
    entry = http_entry(tmp_path, f"{base}/bad.safetensors", b"", sha256="2" * 64)
    cache = ModelCache(tmp_path / "cache")
    result = DownloadJob(cache, entry).start().wait(10)
    assert not result.ok and not result.cancelled and result.checkpoints == []
    assert "its SHA-256 is" in result.error and isinstance(result.exception, ChecksumError)
    assert not cache.is_cached(entry) and not any(cache.root.iterdir())
    missing = DownloadJob(cache, dataclasses.replace(entry, url=f"{base}/nothing-here")).start().wait(10)
    assert "could not download" in missing.error and not any(cache.root.iterdir())


def test_download_job_cancel_mid_download_leaves_nothing(tmp_path, slow_server):
    files, base = slow_server
    content = os.urandom(100_000)
    files["big.safetensors"] = (content, 1000, 0.03)                 # 100 chunks, ~3 s in all
    entry = http_entry(tmp_path, f"{base}/big.safetensors", content)
    cache = ModelCache(tmp_path / "cache")
    job = DownloadJob(cache, entry).start()
    deadline = time.monotonic() + 10
    while job.progress()[0] < 5000 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert job.poll() is None and 0 < job.progress()[0] < len(content)
    job.cancel()
    cancelled_at = time.monotonic()
    result = job.wait(10, interval=0.01)
    assert time.monotonic() - cancelled_at < 1.0                    # stopped at the next block, not at the end
    assert result.cancelled and not result.ok and result.checkpoints == [] and result.error == ""
    assert job.progress()[0] < len(content)
    assert not cache.is_cached(entry) and not any(cache.root.iterdir())


@pytest.mark.parametrize("field, value", [("id", "../x"), ("id", "a/b"), ("version", "../../evil"),
                                          ("id", ".hidden"), ("version", ""), ("id", "x\\..\\y"), ("id", 7)])
def test_ids_and_versions_that_are_not_plain_names_are_refused(tmp_path, field, value):
    path = write_catalog(tmp_path / "Models.json", **{field: value})
    with pytest.raises(CatalogError, match=f"{field} .* must be letters, digits"):
        load_catalog(path)


def test_a_cache_path_never_leaves_the_cache_root(tmp_path):
    """An entry made without load_catalog (so unchecked) still cannot write or delete outside the cache."""
    weights, digest = model_file(tmp_path)
    entry = load_catalog(write_catalog(tmp_path / "Models.json", sha256=digest))[0]
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    cache = ModelCache(tmp_path / "cache")
    evil = dataclasses.replace(entry, id="../victim", version="x")
    for call in (lambda: cache.folder(evil), lambda: cache.is_cached(evil), lambda: cache.import_file(evil, weights)):
        with pytest.raises(CatalogError, match="outside the model cache|must be letters, digits"):
            call()
    assert (victim / "keep.txt").read_text() == "precious"
    assert not (tmp_path / "victim-x").exists()
    assert cache.import_file(entry, weights)                      # a proper entry still installs
