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


def test_a_nonfinite_loss_names_the_cases_of_its_batch_and_a_cache_holding_nan(tmp_path):
    from diffumamba.training.sampling import TrainingCase

    case = tiny_case(nan=True)
    cache_file = tmp_path / "pre" / "plan_x" / "cases" / "tiny.npz"
    trainer = tiny_trainer(TrainingCase.from_arrays("LIDC-IDRI-1003_R_3", case.data, case.label, source=cache_file),
                           tmp_path / "run")
    with pytest.raises(ValueError) as raised:
        trainer.fit(progress=False)
    message = str(raised.value)
    assert "iteration 1: nan" in message and "the batch held case(s) LIDC-IDRI-1003_R_3; " in message
    assert (f"the preprocessed cache of LIDC-IDRI-1003_R_3, {cache_file}, holds 1 NaN/Inf values: delete that file "
            "and run again to preprocess it anew; look for NaN/Inf voxels") in message


def test_a_nonfinite_loss_from_finite_data_names_the_cases_but_blames_no_cache(tmp_path):
    trainer = tiny_trainer(tiny_case(), tmp_path)
    loss_of_step = trainer.method.loss

    def infinite():
        loss, scalars = loss_of_step()
        return loss * float("inf"), scalars

    trainer.method.loss = infinite
    with pytest.raises(ValueError, match=r"the batch held case\(s\) tiny; look for NaN/Inf voxels") as raised:
        trainer.fit(progress=False)
    assert "cache" not in str(raised.value)


def test_a_cached_case_holding_nan_is_refused_naming_its_file(tmp_path):
    """Caches written before preprocessing refused NaN (2-slice crops resampled cubically) are still on disk, and
    their sources have not changed, so they would be used as they are."""
    from diffumamba.data.preprocessing import CaseProperties
    from diffumamba.training.sampling import TrainingCase

    case = tiny_case(nan=True)
    (tmp_path / "cases").mkdir()
    np.savez(tmp_path / "cases" / "c1.npz", data=case.data, label=case.label)
    properties = CaseProperties((8, 16, 16), (1.0, 1.0, 1.0), ((0, 8), (0, 16), (0, 16)), (8, 16, 16))
    (tmp_path / "cases" / "c1.json").write_text(json.dumps(properties.to_dict()))
    with pytest.raises(ValueError, match=rf"^cached case c1 \({tmp_path / 'cases' / 'c1.npz'}\) holds 1 NaN/Inf "
                                         r"values: delete that file and run again"):
        TrainingCase.from_cache(tmp_path, "c1")


# -- NIfTI: SimpleITK 2.5.7 reads NaN/Inf voxels of a float .nii/.nii.gz as 0 (NRRD keeps them) ---------------------

def nan_ct(dtype=np.float32):
    """A CT-like float volume with 400 NaN voxels in a block, +Inf and -Inf, placed asymmetrically (so a voxel found
    at the wrong place, or axes read in the wrong order, shows)."""
    array = np.full((24, 32, 32), -700, dtype)
    array[8:20, 8:24, 8:24] = 40
    array[10:14, 10:20, 10:20] = np.nan
    array[3, 4, 5], array[21, 30, 2] = np.inf, -np.inf
    return array


def write_nifti(array, path, byte_order="<"):
    """``array`` (z, y, x) as NIfTI-1 in ``byte_order`` with a non-trivial grid; nibabel writes big-endian files."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.7, 0.8, 2.5))
    image.SetOrigin((-10.0, 20.0, 30.0))
    sitk.WriteImage(image, str(path))
    if byte_order == ">":
        import nibabel

        little = nibabel.load(str(path), mmap=False)          # the file is replaced below
        big = nibabel.Nifti1Image(np.asanyarray(little.dataobj), little.affine, little.header.as_byteswapped(">"))
        nibabel.save(big, str(path))
        assert nibabel.load(str(path)).header.endianness == ">"
    return path


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("byte_order", ["<", ">"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_and_inf_in_a_float_nifti_are_read_back_where_they_are(tmp_path, suffix, byte_order, dtype):
    from diffumamba.imageio import read_scalar_image
    from diffumamba.inference.inputs import finite_image

    array = nan_ct(dtype)
    path = write_nifti(array, tmp_path / f"scan{suffix}", byte_order)
    assert np.isfinite(sitk.GetArrayFromImage(sitk.ReadImage(str(path)))).all()      # what ITK alone gives
    image = read_scalar_image(path)
    read = sitk.GetArrayFromImage(image)
    np.testing.assert_array_equal(~np.isfinite(read), ~np.isfinite(array))
    np.testing.assert_array_equal(read[np.isfinite(array)], array[np.isfinite(array)])
    itk = sitk.ReadImage(str(path))
    assert (image.GetSpacing(), image.GetOrigin(), image.GetDirection()) == \
        (itk.GetSpacing(), itk.GetOrigin(), itk.GetDirection())
    assert image.GetPixelID() == itk.GetPixelID()
    with pytest.raises(ValueError, match=rf"scan{suffix} has 402 NaN/Inf voxel\(s\): fix the image, or pass "
                                         r"--replace-nonfinite"):
        finite_image(image, path.name)


def test_values_cut_by_chunk_boundaries_are_found():
    """A .nii.gz is decompressed in chunks of any length, so a chunk may end inside a value."""
    from diffumamba.imageio import _Header, _NonFiniteFinder

    values = np.arange(40, dtype=">f8")
    values[[0, 7, 8, 39]] = [np.nan, np.inf, -np.inf, np.nan]
    data = b"h" * 352 + values.tobytes() + b"trailing bytes past the voxel data"
    for size in (1, 3, 5, 8, 13, 1000):
        finder = _NonFiniteFinder(_Header(352, values.nbytes, values.dtype))
        for start in range(0, len(data), size):
            finder.feed(data[start:start + size])
        assert finder.indices().tolist() == [0, 7, 8, 39], size


def untrained_model(path):
    """A tiny untrained CT segmentation checkpoint: what predict reads from an image is all these tests look at."""
    from diffumamba.checkpoint import save_checkpoint
    from diffumamba.nets import build_network, isotropic_3d

    config = isotropic_3d("resunet", n_stages=3, base_features=4, max_features=8, patch_size=[8, 16, 16])
    plan = {"target_spacing": [2.5, 0.8, 0.7], "patch_size": [8, 16, 16], "batch_size": 2,
            "median_shape": [24, 32, 32], "network": config.to_dict(), "channel_names": ["CT"],
            "labels": {"background": 0, "GTV": 1},
            "intensities": [{"mean": 40.0, "std": 90.0, "percentile_00_5": -700.0, "percentile_99_5": 250.0}],
            "fingerprint_hash": "test", "image_order": 3, "linear_labels": False, "inference": {},
            "task": "segmentation", "separate_z_order": None}
    torch.manual_seed(0)
    save_checkpoint(path, build_network(config), config, {"labels": plan["labels"], "plan": plan})
    return path


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_predict_refuses_a_nifti_with_nan_and_replaces_them_as_for_nrrd(tmp_path, capsys, suffix):
    model = untrained_model(tmp_path / "model.safetensors")
    array = nan_ct()
    (tmp_path / "in").mkdir()
    nifti = write_nifti(array, tmp_path / "in" / f"scan{suffix}")
    out = tmp_path / "out"
    assert main(["predict", str(nifti), "--model", str(model), "--out", str(out), "--progress", "none"]) == 2
    err = capsys.readouterr().err
    assert f"scan: FAILED: {nifti} has 402 NaN/Inf voxel(s): fix the image, or pass --replace-nonfinite" in err
    assert "Traceback" not in err and not out.exists()
    assert main(["predict", str(nifti), "--model", str(model), "--out", str(out), "--progress", "none",
                 "--replace-nonfinite"]) == 0
    assert f"{nifti}: replaced 402 NaN/Inf voxel(s) with the image's minimum (-700)" in capsys.readouterr().out
    nrrd = tmp_path / "nrrd" / "scan.nrrd"
    nrrd.parent.mkdir()
    sitk.WriteImage(sitk.ReadImage(str(nifti)), str(nrrd))                 # the same grid, NaN read as 0 ...
    twin = sitk.GetImageFromArray(array)
    twin.CopyInformation(sitk.ReadImage(str(nrrd)))
    sitk.WriteImage(twin, str(nrrd))                                       # ... and the NaN put back
    assert main(["predict", str(nrrd), "--model", str(model), "--out", str(tmp_path / "out_nrrd"), "--progress",
                 "none", "--replace-nonfinite"]) == 0
    from_nifti = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "scan.nii.gz")))
    np.testing.assert_array_equal(from_nifti, sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out_nrrd" /
                                                                                       "scan.nii.gz"))))


LIDC = "lidc_idri_nodule_vois/image/LIDC-IDRI-1003_R_3.nii.gz"


def test_a_real_int16_nifti_is_read_unchanged_without_looking_for_nan(shared_data, monkeypatch):
    from diffumamba import imageio

    monkeypatch.setattr(imageio, "_NonFiniteFinder", None)                 # an integer image never builds one
    image = imageio.read_scalar_image(shared_data / LIDC)
    itk = sitk.ReadImage(str(shared_data / LIDC))
    assert image.GetPixelID() == sitk.sitkInt16
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(itk))
    assert image.GetOrigin() == itk.GetOrigin() and image.GetSpacing() == itk.GetSpacing()


def test_nan_injected_into_a_float_copy_of_a_real_nifti_is_found(shared_data, tmp_path):
    from diffumamba.imageio import read_scalar_image

    real = sitk.ReadImage(str(shared_data / LIDC))
    array = sitk.GetArrayFromImage(real).astype(np.float32)
    array[1, 20:23, 30:35], array[0, 0, 0], array[1, 43, 42] = np.nan, np.inf, np.nan
    copy = sitk.GetImageFromArray(array)
    copy.CopyInformation(real)
    sitk.WriteImage(copy, str(tmp_path / "lidc_float.nii.gz"))
    image = read_scalar_image(tmp_path / "lidc_float.nii.gz")
    read = sitk.GetArrayFromImage(image)
    assert np.count_nonzero(~np.isfinite(read)) == 17
    np.testing.assert_array_equal(np.isfinite(read), np.isfinite(array))
    np.testing.assert_array_equal(read[np.isfinite(read)], array[np.isfinite(array)])
    assert image.GetDirection() == real.GetDirection() and image.GetOrigin() == real.GetOrigin()


def test_convert_refuses_a_case_with_nan_naming_it(tmp_path, capsys):
    """SimpleITK read NaN in NIfTI as 0, so convert copied a changed image with exit 0 (issue 28, D1); now the
    NaN is seen and the case is refused when converted, not first when a dataset is trained on."""
    source = tmp_path / "source"
    source.mkdir()
    for case, nan in (("a", False), ("b", True)):
        array = np.full((8, 16, 16), -700, np.float32)
        array[2:6, 4:12, 4:12] = 40.0
        if nan:
            array[4, 8, 8] = np.nan
        sitk.WriteImage(sitk.GetImageFromArray(array), str(source / f"{case}_image.nii.gz"))
        sitk.WriteImage(sitk.GetImageFromArray((array > 0).astype(np.uint8)), str(source / f"{case}_label.nii.gz"))
    out = tmp_path / "Dataset901_Nan"
    main(["convert", "pairs", str(source), str(out), "--pair", "{case}_image.nii.gz", "{case}_label.nii.gz"])
    said = capsys.readouterr()
    assert "b: FAILED: channel 0 has 1 NaN/Inf voxel(s); fix the source image" in said.out + said.err, said
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == ["a_0000.nii.gz"]
