"""User errors are one line naming the file and what to do, exit 2; bugs keep their traceback (issue 14)."""

import pytest
import SimpleITK as sitk

from diffumamba.cli import main
from test_predict import checkpoint  # noqa: F401  (the tiny trained model, a module fixture)


def _image(checkpoint):
    root, model_path = checkpoint
    return next((root / "Dataset900_Phantom" / "imagesTs").iterdir()), model_path


def test_out_that_is_a_file(checkpoint, tmp_path, capsys):
    image_path, model_path = _image(checkpoint)
    out = tmp_path / "out.txt"
    out.write_text("not a folder")
    assert main(["predict", str(image_path), "--model", str(model_path), "--out", str(out), "--progress", "none"]) == 2
    err = capsys.readouterr().err
    assert f"diffumamba predict: error: --out {out} is a file; give a folder" in err and "Traceback" not in err
    assert out.read_text() == "not a folder"


def test_out_that_cannot_be_created(checkpoint, tmp_path, capsys):
    """Root ignores permissions, so an unwritable --out is one below a file: mkdir fails with ENOTDIR."""
    image_path, model_path = _image(checkpoint)
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "out"
    assert main(["predict", str(image_path), "--model", str(model_path), "--out", str(out), "--progress", "none"]) == 2
    err = capsys.readouterr().err
    assert f"error: cannot create --out {out}: {out}: Not a directory; a part of the path is a file" in err
    assert "Traceback" not in err


def test_debug_shows_the_traceback_of_a_user_error(checkpoint, tmp_path, capsys):
    image_path, model_path = _image(checkpoint)
    (tmp_path / "out").write_text("")
    assert main(["--debug", "predict", str(image_path), "--model", str(model_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "is a file; give a folder" in err


def test_a_bug_keeps_its_traceback(monkeypatch):
    from diffumamba.commands import info

    def broken(args):
        raise KeyError("a bug")

    monkeypatch.setattr(info, "run", broken)
    with pytest.raises(KeyError):
        main(["info"])


def test_batch_with_a_corrupt_case_writes_the_good_one_and_fails(checkpoint, tmp_path, capsys):
    image_path, model_path = _image(checkpoint)
    batch = tmp_path / "batch"
    batch.mkdir()
    (batch / "good_0000.nii.gz").write_bytes(image_path.read_bytes())
    data = image_path.read_bytes()
    (batch / "cut_0000.nii.gz").write_bytes(data[:len(data) // 2])          # a copy that stopped half-way
    out = tmp_path / "out"
    assert main(["predict", str(batch), "--model", str(model_path), "--out", str(out), "--progress", "none"]) == 2
    captured = capsys.readouterr()
    assert "cut: FAILED: " in captured.err and "cut_0000.nii.gz is truncated or corrupt" in captured.err
    assert "re-export or re-copy it" in captured.err
    assert "error: 1 of 2 case(s) failed: cut (reasons above); the other cases were written to" in captured.err
    assert "good: " in captured.out and sorted(p.name for p in out.iterdir()) == ["good.nii.gz"]
    assert sitk.ReadImage(str(out / "good.nii.gz")).GetSize() == sitk.ReadImage(str(image_path)).GetSize()
