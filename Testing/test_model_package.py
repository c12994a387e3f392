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
