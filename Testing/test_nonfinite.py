"""NaN/Inf voxels: refused where cases are read (train, preprocess, predict) naming the file and the count, or
replaced by the image's minimum on request; a non-finite training loss stops the run before any checkpoint."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from diffumamba.cli import main


def poison(path, value=np.nan, where=None):
    """Rewrite the image at ``path`` as float32 with one non-finite voxel (default: in the middle)."""
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    array[where or tuple(n // 2 for n in array.shape)] = value
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    sitk.WriteImage(out, str(path))
    return array


def tiny_train(dataset, tmp_path, *extra):
    return ["train", str(dataset), "--preprocessed", str(tmp_path / "pre"), "--run-dir", str(tmp_path / "run"),
            "--fold", "all", "--epochs", "1", "--iterations", "2", "--features", "4", "8",
            "--max-patch", "16", "32", "32", "--no-amp", "--network", "resunet", *extra]


def tumour_voxel(dataset, case):
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(dataset / "labelsTr" / f"{case}.nrrd")))
    return tuple(int(i) for i in np.argwhere(label > 0).mean(0))


@pytest.fixture
def nrrd_phantoms(phantoms):
    """The phantoms as .nrrd (SimpleITK's NIfTI reader turns NaN into 0, NRRD keeps it)."""
    for path in sorted(phantoms.glob("*Tr/*.nii.gz")):
        sitk.WriteImage(sitk.ReadImage(str(path)), str(path).replace(".nii.gz", ".nrrd"))
        path.unlink()
    meta = json.loads((phantoms / "dataset.json").read_text())
    (phantoms / "dataset.json").write_text(json.dumps({**meta, "file_ending": ".nrrd"}))
    return phantoms


def test_train_refuses_a_case_with_one_nan_voxel(nrrd_phantoms, tmp_path, capsys):
    phantoms = nrrd_phantoms
    # In the tumour: before the check, the fingerprint's statistics became NaN and with them every cached case.
    poison(phantoms / "imagesTr" / "c2_0000.nrrd", where=tumour_voxel(phantoms, "c2"))
    assert main(tiny_train(phantoms, tmp_path)) == 2
    err = capsys.readouterr().err
    assert "c2_0000.nrrd has 1 NaN/Inf voxel(s): fix the image, or pass --replace-nonfinite" in err
    assert err.count("error:") == 1 and "Traceback" not in err
    assert not (tmp_path / "pre" / "fingerprint.json").exists()          # nothing computed from the NaN
    assert not (tmp_path / "run" / "last.safetensors").exists()


def test_train_replaces_nonfinite_voxels_on_request(nrrd_phantoms, tmp_path, capsys):
    phantoms = nrrd_phantoms
    array = poison(phantoms / "imagesTr" / "c2_0000.nrrd", np.nan, tumour_voxel(phantoms, "c2"))
    assert main(tiny_train(phantoms, tmp_path, "--replace-nonfinite")) == 0
    fingerprint = json.loads((tmp_path / "pre" / "fingerprint.json").read_text())
    assert all(np.isfinite(v) for s in fingerprint["foreground_intensities"] for v in s.values())
    from diffumamba.data.cache import load_case
    folder = next((tmp_path / "pre").glob("plan_*"))
    assert np.isfinite(load_case(folder, "c2")[0]).all()
    out = capsys.readouterr().out
    assert "loss nan" not in out
    assert "c2_0000.nrrd: replaced 1 NaN/Inf voxel(s) with the image's minimum" in out
    assert np.isfinite(array).sum() == array.size - 1


def test_check_finite_counts_refuses_and_replaces():
    from diffumamba.data.dataset import check_finite

    array = np.arange(8, dtype=np.float32).reshape(2, 4) - 3
    assert check_finite(array, "x.nrrd") is array
    array[0, 1], array[1, 2] = np.nan, -np.inf
    with pytest.raises(ValueError, match=r"^x.nrrd has 2 NaN/Inf voxel\(s\): fix the image, or pass "
                                         r"--replace-nonfinite to replace them with the image's minimum$"):
        check_finite(array, "x.nrrd")
    fixed = check_finite(array, "x.nrrd", replace=True)
    assert np.isfinite(fixed).all() and fixed[0, 1] == fixed[1, 2] == -3 and np.isnan(array[0, 1])
    with pytest.raises(ValueError, match="has 4 NaN/Inf.*no finite voxel"):
        check_finite(np.full(4, np.nan, np.float32), "empty.nrrd", replace=True)


def test_preprocess_case_refuses_nonfinite_data():
    from diffumamba.data.preprocessing import preprocess_case

    data = np.random.default_rng(0).normal(size=(1, 6, 8, 8)).astype(np.float32)
    data[0, 3, 4, 4] = np.nan
    with pytest.raises(ValueError, match="has 1 NaN/Inf voxel"):
        preprocess_case(data, None, (1, 1, 1), (2, 2, 2), ["MR"], [{}])


def ct_file(tmp_path, value):
    array = np.full((12, 16, 16), -1000, np.float32)
    array[4:8, 4:12, 4:12] = 40
    array[6, 8, 8] = value
    path = tmp_path / "scan.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    return path


def test_predict_input_with_nan_is_refused_or_replaced(tmp_path):
    from diffumamba.inference.inputs import find_inputs

    path = ct_file(tmp_path, np.nan)
    [(name, load)] = find_inputs([path], expected_modality="CT")
    with pytest.raises(ValueError, match=r"scan.nrrd has 1 NaN/Inf voxel\(s\): fix the image, or pass "
                                         r"--replace-nonfinite"):
        load()
    [(name, load)] = find_inputs([path], expected_modality="CT", replace_nonfinite=True)
    case = load()
    array = sitk.GetArrayFromImage(case.image)
    assert np.isfinite(array).all() and array[6, 8, 8] == -1000
    assert case.image.GetSpacing() == sitk.ReadImage(str(path)).GetSpacing()


def tiny_case(nan=False):
    from diffumamba.training.sampling import TrainingCase

    rng = np.random.default_rng(0)
    label = np.zeros((8, 16, 16), np.int16)
    label[2:6, 4:12, 4:12] = 1
    data = (rng.normal(size=(1, 8, 16, 16)) + label).astype(np.float32)
    if nan:
        data[0, 4, 8, 8] = np.nan
    return TrainingCase.from_arrays("tiny", data, label)


def tiny_trainer(case, out_dir, epochs=2):
    from diffumamba.nets import isotropic_3d
    from diffumamba.training.trainer import Trainer, TrainSettings

    config = isotropic_3d("resunet", n_stages=3, base_features=4, max_features=8, patch_size=[8, 16, 16])
    settings = TrainSettings(epochs=epochs, iterations_per_epoch=2, initial_lr=0.01, validate_every=1, seed=0,
                             device="cpu", augment=False)
    return Trainer(config, [case], [case], out_dir, settings, batch_size=2)


def test_a_nonfinite_loss_stops_training_before_any_checkpoint(tmp_path):
    trainer = tiny_trainer(tiny_case(nan=True), tmp_path)
    with pytest.raises(ValueError, match=r"^non-finite loss at epoch 1 iteration 1: "):
        trainer.fit(progress=False)
    assert not (tmp_path / "last.safetensors").exists() and not (tmp_path / "best.safetensors").exists()
    assert not (tmp_path / "log.csv").exists()


def test_a_nonfinite_loss_after_a_good_epoch_keeps_the_good_checkpoint(tmp_path):
    from diffumamba.checkpoint import load_checkpoint

    trainer = tiny_trainer(tiny_case(), tmp_path, epochs=3)

    def poisoned_in_epoch_two():
        loss, scalars = loss_of_step()
        return (loss * float("nan") if trainer.iteration >= 2 else loss), scalars

    loss_of_step = trainer.method.loss
    trainer.method.loss = poisoned_in_epoch_two
    with pytest.raises(ValueError, match=r"non-finite loss at epoch 2 iteration 1"):
        trainer.fit(progress=False)
    header, state, _ = load_checkpoint(tmp_path / "last.safetensors")
    assert header["training"]["epoch"] == 1 and all(torch.isfinite(v).all() for v in state.values())
