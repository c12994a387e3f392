"""Model packages (``diffumamba package``; ``predict --model MODEL.zip``): weights-only folds, a plan, a model card,
verified on writing and checked against their manifest on reading."""

import json
import zipfile

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import train_tiny, write_phantoms
from diffumamba.checkpoint import load_checkpoint
from diffumamba.cli import main
from diffumamba.inference.models import load_ensemble
from diffumamba.model_package import package_members


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two tiny models of one plan, trained for two iterations each on phantoms (transport, not accuracy)."""
    root = tmp_path_factory.mktemp("runs")
    dataset = write_phantoms(root / "Dataset900_Phantom")
    first = train_tiny(dataset, root, "a")
    return first, train_tiny(dataset, root, "b"), dataset


def test_package_holds_weights_only_and_predicts_like_its_checkpoints(two_runs, tmp_path, capsys):
    first, second, dataset = two_runs
    card = tmp_path / "card.md"
    card.write_text("# Phantom model\nNot for clinical use.\n")
    package = tmp_path / "model.zip"
    assert main(["package", str(first), str(second), "--out", str(package), "--card", str(card),
                 "--overlap", "0.25", "--crop", "none"]) == 0
    assert "read back and verified" in capsys.readouterr().out
    with zipfile.ZipFile(package) as archive:
        names = set(archive.namelist())
        assert archive.read("MODEL_CARD.md").decode().startswith("# Phantom model")
        assert json.loads(archive.read("plan.json"))["inference"]["overlap"] == 0.25
    assert {"manifest.json", "plan.json", "MODEL_CARD.md"} < names
    members = package_members(package)
    assert len(members) == 2
    assert sum(len(raw) for _, raw in members) < 0.7 * (first.stat().st_size + second.stat().st_size)  # no optimizer
    _, weights, _ = load_checkpoint(first)
    packaged = load_ensemble([package], "cpu")
    assert packaged.overlap(None) == 0.25
    for name, value in packaged.networks[0].state_dict().items():
        assert np.array_equal(value.numpy(), weights[name].numpy())

    image = dataset / "imagesTr" / "c0_0000.nii.gz"
    for model, out in (([str(package)], "from_zip"), ([str(first), str(second), "--overlap", "0.25"], "from_files")):
        assert main(["predict", str(image), "--model", *model, "--out", str(tmp_path / out), "--progress", "none"]) == 0
    a, b = (sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / o / "c0.nii.gz"))) for o in ("from_zip", "from_files"))
    assert np.array_equal(a, b)


def test_damaged_or_foreign_packages_are_refused_with_one_line(two_runs, tmp_path, capsys):
    first, _, dataset = two_runs
    package = tmp_path / "model.zip"
    assert main(["package", str(first), "--out", str(package)]) == 0
    image = str(dataset / "imagesTr" / "c0_0000.nii.gz")

    def refused(path, expected):
        assert main(["predict", image, "--model", str(path), "--out", str(tmp_path / "out"), "--progress", "none"]) == 2
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and expected in error, error
        assert not (tmp_path / "out").exists()

    raw = package.read_bytes()
    (tmp_path / "cut.zip").write_bytes(raw[: len(raw) // 2])
    refused(tmp_path / "cut.zip", "cut.zip: not a readable model package")
    with zipfile.ZipFile(package) as source, zipfile.ZipFile(tmp_path / "edited.zip", "w") as edited:
        for name in source.namelist():
            data = source.read(name)
            if name.endswith(".safetensors"):
                data = data[:-4] + bytes(4)        # the last weights changed: the manifest's SHA-256 no longer fits
            edited.writestr(name, data)
    refused(tmp_path / "edited.zip", "does not match the package's manifest")
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as evil:
        evil.writestr("../outside.safetensors", raw[:100])
    refused(tmp_path / "evil.zip", "paths outside itself")
    with zipfile.ZipFile(tmp_path / "empty.zip", "w") as empty:
        empty.writestr("readme.txt", "nothing")
    refused(tmp_path / "empty.zip", "holds no .safetensors checkpoint")
    assert main(["package", str(first), "--out", str(tmp_path / "model.tar")]) == 2
    assert "a model package is a .zip file" in capsys.readouterr().err


# --- issue 28: a package is verified before anything in it is used ------------------------------------------------

FOLD = "fold_all/model.safetensors"


@pytest.fixture
def packaged(two_runs, tmp_path):
    """A one-fold package of the first run, with a card; and the phantom image to predict."""
    first, _, dataset = two_runs
    card = tmp_path / "card.md"
    card.write_text("# Phantom model\n")
    package = tmp_path / "model.zip"
    assert main(["package", str(first), "--out", str(package), "--card", str(card)]) == 0
    return package, str(dataset / "imagesTr" / "c0_0000.nii.gz")


def rebuilt(package, out, manifest=None, drop=(), add=None, change=()):
    """A copy of ``package``: ``manifest(parsed)`` edits its manifest in place (or returns a replacement), ``drop``
    members removed, ``add`` members added, those in ``change`` altered in their last byte (same size)."""
    with zipfile.ZipFile(package) as source, zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as copy:
        for name in source.namelist():
            data = source.read(name)
            if name in drop:
                continue
            if name == "manifest.json" and manifest is not None:
                parsed = json.loads(data)
                replaced = manifest(parsed)
                data = json.dumps(parsed if replaced is None else replaced).encode()
            if name in change:
                data = data[:-1] + bytes([data[-1] ^ 1])
            copy.writestr(name, data)
        for name, data in (add or {}).items():
            copy.writestr(name, data)
    return out


def predict_refused(capsys, image, model, out, expected):
    """``predict`` exits 2 with one error line containing ``expected`` (and the package's name), writing nothing."""
    capsys.readouterr()
    assert main(["predict", image, "--model", str(model), "--out", str(out), "--progress", "none"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and expected in error and str(model) in error, error
    assert not out.exists()


def test_a_package_without_its_manifest_is_refused(packaged, tmp_path, capsys):
    package, image = packaged
    bare = rebuilt(package, tmp_path / "bare.zip", drop={"manifest.json"}, change={FOLD})
    predict_refused(capsys, image, bare, tmp_path / "out", "has no manifest.json, so its contents cannot be verified")


def sha256_as_list(manifest):
    for entry in manifest.get("members", {}).values():
        entry["sha256"] = [entry["sha256"]]
    if "sha256" in manifest:                                   # the first format's {member: sha256}
        manifest["sha256"] = list(manifest["sha256"].values())


def sizes_removed(manifest):
    for entry in manifest["members"].values():
        del entry["size"]


def fold_unlisted(manifest):
    del manifest["members"][FOLD]


@pytest.mark.parametrize("edit, change, expected", [
    (sha256_as_list, True, "manifest.json is malformed (plan.json: sha256 must be 64 lower-case hex digits)"),
    (sizes_removed, True, "manifest.json is malformed (plan.json must have exactly sha256 and size)"),
    (fold_unlisted, False, f"fold member {FOLD} is not listed"),
    (lambda m: m.update(format="diffumamba-model-package/3"), False, "its format diffumamba-model-package/3 is not"),
    (lambda m: m.update(format="zip"), False, "format must be 'diffumamba-model-package/2'"),
    (lambda m: m.update(extra=True), False, "unknown key 'extra'"),
    (lambda m: [], False, "manifest.json is malformed (not a JSON object)"),
])
def test_a_malformed_manifest_is_refused(packaged, tmp_path, capsys, edit, change, expected):
    package, image = packaged
    edited = rebuilt(package, tmp_path / "edited.zip", manifest=edit, change={FOLD} if change else ())
    predict_refused(capsys, image, edited, tmp_path / "out", expected)


@pytest.mark.parametrize("drop, add, expected", [
    ((), {"fold_9/model.safetensors": "first run"}, "fold_9/model.safetensors is in the zip but not in its manifest"),
    ((), {"notes.txt": b"hello"}, "notes.txt is in the zip but not in its manifest"),
    (("MODEL_CARD.md",), None, "MODEL_CARD.md is listed in its manifest but missing from the zip")])
def test_members_not_listed_or_missing_are_refused(two_runs, packaged, tmp_path, capsys, drop, add, expected):
    package, image = packaged
    add = {k: two_runs[0].read_bytes() if v == "first run" else v for k, v in (add or {}).items()}
    edited = rebuilt(package, tmp_path / "edited.zip", drop=drop, add=add)
    predict_refused(capsys, image, edited, tmp_path / "out", expected)


def test_a_zip_bomb_is_refused_after_inflating_at_most_its_listed_size(packaged, tmp_path, capsys, monkeypatch):
    """A fold that inflates to 200 MB where the manifest lists its real size (D14: a 3 GB one made predict peak at
    6.57 GB RSS before it was refused)."""
    from package_files import MB, count_inflated, write_bomb

    package, image = packaged
    bomb = tmp_path / "bomb.zip"
    listed = write_bomb(package, bomb, FOLD, megabytes=200)
    assert bomb.stat().st_size < 2 * MB and listed < MB
    inflated = count_inflated(monkeypatch)
    predict_refused(capsys, image, bomb, tmp_path / "out", f"{FOLD} inflates to 209715200 bytes, its manifest lists "
                                                           f"{listed} (damaged, or a zip bomb)")
    assert inflated[FOLD] <= listed, inflated


def test_a_package_renamed_safetensors_is_named_for_what_it_is(packaged, tmp_path, capsys):
    package, image = packaged
    renamed = tmp_path / "model.safetensors"
    renamed.write_bytes(package.read_bytes())
    predict_refused(capsys, image, renamed, tmp_path / "out", "is a model package (a .zip) named .safetensors; "
                                                               "rename it to model.zip")


def test_a_version_1_package_is_refused_and_repackaged_as_the_message_says(packaged, tmp_path, capsys):
    package, image = packaged

    def first_format(manifest):
        return {"format": "diffumamba-model-package/1", "folds": manifest["folds"],
                "sha256": {FOLD: manifest["members"][FOLD]["sha256"]}}

    old = rebuilt(package, tmp_path / "old.zip", manifest=first_format)
    predict_refused(capsys, image, old, tmp_path / "out", "a diffumamba-model-package/1 package, whose manifest "
                                                          "checks the folds only; re-package it: unzip it and run "
                                                          "`diffumamba package fold_*/model.safetensors")
    with zipfile.ZipFile(old) as archive:
        archive.extractall(tmp_path / "unzipped")
    folds = sorted((tmp_path / "unzipped").glob("fold_*/model.safetensors"))
    assert main(["package", *map(str, folds), "--card", str(tmp_path / "unzipped" / "MODEL_CARD.md"),
                 "--out", str(tmp_path / "new.zip")]) == 0
    assert package_members(tmp_path / "new.zip") == package_members(package)


def test_package_refuses_checkpoints_of_different_tasks(two_runs, tmp_path, capsys):
    """A correction model of the same phantoms shares the segmentation model's plan in all but its task."""
    first, _, dataset = two_runs
    assert main(["train", str(dataset), "--preprocessed", str(tmp_path / "pre"), "--run-dir", str(tmp_path / "c"),
                 "--fold", "all", "--epochs", "1", "--iterations", "1", "--features", "4", "8", "--max-patch", "16",
                 "32", "32", "--no-amp", "--task", "correction"]) == 0
    correction = tmp_path / "c" / "last.safetensors"
    out = tmp_path / "mixed.zip"
    capsys.readouterr()
    assert main(["package", str(first), str(correction), "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "checkpoint 2 is a correction model, checkpoint 1 a segmentation" in error
    assert str(correction) in error and not out.exists()


def test_package_refuses_a_binary_card_naming_it(two_runs, tmp_path, capsys):
    card = tmp_path / "card.pdf"
    card.write_bytes(b"%PDF-1.7\n\x98\x00\xff binary")
    out = tmp_path / "model.zip"
    capsys.readouterr()
    assert main(["package", str(two_runs[0]), "--card", str(card), "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and f"--card {card}: not a UTF-8 text file" in error, error
    assert not out.exists()
