"""The built-in click lesion model (issue 29): where ``correct`` and ``serve`` find it without --model, which version
they take, the one line they say when there is none, and ``correct``/``serve`` using it."""

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from diffumamba import builtin_models
from diffumamba.builtin_models import builtin_model, search_folders, version_key
from diffumamba.cli import main

from conftest import REPO, tumour_point


@pytest.fixture(autouse=True)
def _no_variable(monkeypatch):
    monkeypatch.delenv("DIFFUMAMBA_CLICK_MODEL", raising=False)


def _packages(folder: Path, *versions: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for version in versions:
        (folder / f"click-lesion-{version}.zip").write_bytes(b"a package")
    return folder


def test_semantic_versions_sort_by_precedence_not_by_text():
    versions = ["0.10.0", "1.0.0", "0.2.0", "1.0.0-rc.1", "1.0.0-alpha", "1.0.0-alpha.2", "0.1.0+build.5", "1.0.0-rc.10"]
    assert sorted(versions, key=version_key) == ["0.1.0+build.5", "0.2.0", "0.10.0", "1.0.0-alpha", "1.0.0-alpha.2",
                                                 "1.0.0-rc.1", "1.0.0-rc.10", "1.0.0"]
    assert [version_key(v) for v in ("latest", "1.0", "01.0.0", "1.0.0.zip", "")] == [None] * 5


def test_the_folders_of_an_installed_extension_and_of_the_checkout():
    """Slicer installs the package as Resources/Training/diffumamba and the models as Resources/Models; the source
    checkout has Training/diffumamba and DiffUMambaSeg/Resources/Models."""
    assert search_folders(Path("/slicer/lib/Resources/Training/diffumamba")) == [
        Path("/slicer/lib/Resources/Training/diffumamba/models"), Path("/slicer/lib/Resources/Models"),
        Path("/slicer/lib/Resources/DiffUMambaSeg/Resources/Models")]
    assert search_folders()[0] == REPO / "Training" / "diffumamba" / "models"
    assert REPO / "DiffUMambaSeg" / "Resources" / "Models" in search_folders()


def test_the_first_folder_holding_a_package_wins_and_its_newest_version(tmp_path, monkeypatch):
    package = tmp_path / "Resources" / "Training" / "diffumamba"
    package.mkdir(parents=True)
    slicer = _packages(tmp_path / "Resources" / "Models", "0.2.0", "0.10.0", "0.10.0-rc.1", "latest")
    (slicer / "gtv-lung-preview-9.0.0.zip").write_bytes(b"another model")
    assert builtin_model("correction", package) == slicer / "click-lesion-0.10.0.zip"
    _packages(tmp_path / "Resources" / "DiffUMambaSeg" / "Resources" / "Models", "5.0.0")
    assert builtin_model("correction", package) == slicer / "click-lesion-0.10.0.zip"     # order, not version
    own = _packages(package / "models", "0.1.0")
    assert builtin_model("correction", package) == own / "click-lesion-0.1.0.zip"
    monkeypatch.setenv("DIFFUMAMBA_CLICK_MODEL", str(tmp_path / "mine.zip"))
    with pytest.raises(FileNotFoundError, match=r"DIFFUMAMBA_CLICK_MODEL=.*mine.zip names no file .*pass --model"):
        builtin_model("correction", package)                   # named but missing: an error, not skipped
    (tmp_path / "mine.zip").write_bytes(b"a package")
    assert builtin_model("correction", package) == tmp_path / "mine.zip"
    with pytest.raises(ValueError, match="no built-in model for task 'segmentation'"):
        builtin_model("segmentation", package)


def test_without_a_package_correct_and_serve_say_where_they_looked(tmp_path, monkeypatch, capsys):
    folders = [tmp_path / "a", tmp_path / "b"]
    monkeypatch.setattr(builtin_models, "search_folders", lambda package_dir=None: folders)
    (tmp_path / "c.json").write_text(json.dumps({"clicks": [{"point": [0, 0, 0], "label": "include"}]}))
    image = tmp_path / "ct.nii.gz"
    sitk.WriteImage(sitk.Image(8, 8, 8, sitk.sitkInt16), str(image))
    for argv in (["correct", "--image", str(image), "--clicks", str(tmp_path / "c.json"), "--output",
                  str(tmp_path / "o.nii.gz")], ["serve", "--stdio"]):
        assert main(argv) == 2
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1, error
        assert error[0] == (f"diffumamba {argv[0]}: error: no built-in click lesion model (click-lesion-VERSION.zip): "
                            f"DIFFUMAMBA_CLICK_MODEL is unset and none is in {folders[0]}, {folders[1]}; pass --model "
                            "CHECKPOINT_OR_PACKAGE")
    assert not (tmp_path / "o.nii.gz").exists()


@pytest.fixture
def click_package(correction_model, tmp_path):
    """The tiny correction model of conftest packaged as a built-in model would be."""
    checkpoint, phantoms = correction_model
    package = tmp_path / "models" / "click-lesion-0.0.1.zip"
    package.parent.mkdir()
    assert main(["package", str(checkpoint), "--out", str(package)]) == 0
    return package, checkpoint, phantoms


def test_correct_and_serve_without_model_use_the_builtin_one(click_package, tmp_path, monkeypatch, capsys):
    """DIFFUMAMBA_CLICK_MODEL names the package: ``correct`` without --model writes what --model PACKAGE writes,
    and the worker's ready line names the package it loaded."""
    package, checkpoint, phantoms = click_package
    point, _ = tumour_point(phantoms)
    (tmp_path / "clicks.json").write_text(json.dumps({"clicks": [{"point": point, "label": "include"}]}))
    image = str(phantoms / "imagesTr" / "c0_0000.nii.gz")
    base = ["correct", "--image", image, "--clicks", str(tmp_path / "clicks.json"), "--device", "cpu", "--output"]
    assert main([*base, str(tmp_path / "given.nii.gz"), "--model", str(package)]) == 0
    monkeypatch.setenv("DIFFUMAMBA_CLICK_MODEL", str(package))
    assert main([*base, str(tmp_path / "builtin.nii.gz")]) == 0
    assert "1 click(s)" in capsys.readouterr().out
    given, builtin = (sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / f"{n}.nii.gz"))) for n in ("given", "builtin"))
    assert np.array_equal(given, builtin)

    monkeypatch.setattr(sys, "stdin", io.StringIO('{"id": 1, "command": "ping"}\n{"command": "quit"}\n'))
    assert main(["serve", "--stdio", "--device", "cpu"]) == 0
    replies = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert replies[0]["ready"] and replies[0]["model"] == [str(package)]
    assert replies[1] == {"id": 1, "ok": True} and replies[2]["quit"]
