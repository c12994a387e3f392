"""``diffumamba predict``: image files and real DICOM series in, label maps / DICOM SEG / RTSTRUCT out on the
input grid; ensembles, mirroring TTA, uncertainty, JSON progress, and refusals that leave nothing behind."""

import json

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch

from conftest import train_tiny
from diffumamba.cli import main
from diffumamba.dicom.rtstruct import rasterise, read_rtstruct, select_rois
from diffumamba.dicom.seg import read_seg
from diffumamba.dicom.series import choose_series, read_series, scan_folder
from diffumamba.inference.predictor import predict_label_map
from diffumamba.nets import NetworkConfig
from diffumamba.checkpoint import load_model, save_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny Diff-UMamba trained for a few iterations on CT-like phantoms (the demo's generator)."""
    from diffumamba.demo.run import write_dataset

    root = tmp_path_factory.mktemp("predict")
    write_dataset(root / "Dataset900_Phantom", 3, 1, seed=0)
    return root, train_tiny(root / "Dataset900_Phantom", root, epochs=2)


@pytest.fixture(scope="module")
def everything_model(checkpoint):
    """The same network with its heads biased to call every voxel GTV: a known, non-empty prediction."""
    root, path = checkpoint
    model, header = load_model(path)
    with torch.no_grad():
        for head in model.decoder.seg_layers:
            head.bias.copy_(torch.tensor([-50.0, 50.0]))
    out = root / "everything.safetensors"
    save_checkpoint(out, model, NetworkConfig.from_dict(header["network"]),
                    {k: v for k, v in header.items() if k not in ("network", "format", "provenance")})
    return out


def test_image_file_prediction_lies_on_the_input_grid(checkpoint, tmp_path, capsys):
    root, model_path = checkpoint
    image_path = next((root / "Dataset900_Phantom" / "imagesTs").iterdir())
    assert main(["predict", str(image_path), "--model", str(model_path), "--out", str(tmp_path / "out"),
                 "--format", "nifti", "nrrd", "seg.nrrd", "--progress", "none"]) == 0
    image = sitk.ReadImage(str(image_path))
    for suffix in (".nii.gz", ".nrrd"):
        written = sitk.ReadImage(str(tmp_path / "out" / f"phantom03{suffix}"))
        assert written.GetSize() == image.GetSize() and np.allclose(written.GetOrigin(), image.GetOrigin())
        assert np.allclose(written.GetSpacing(), image.GetSpacing())
    model, header = load_model(model_path)
    expected = predict_label_map(model, header["plan"], sitk.GetArrayFromImage(image).astype(np.float32)[None],
                                 tuple(reversed(image.GetSpacing())))
    assert np.array_equal(sitk.GetArrayFromImage(written), expected)
    assert "phantom03: GTV" in capsys.readouterr().out
    import slicerio

    segmentation = slicerio.read_segmentation(str(tmp_path / "out" / "phantom03.seg.nrrd"))
    (segment,) = segmentation["segments"]
    assert segment["name"] == "GTV" and segment["terminology"]["type"][1] == "86049000"
    mask = slicerio.extract_segments(segmentation, [("GTV", 1)])["voxels"]
    assert np.array_equal(np.transpose(mask), expected.astype(mask.dtype))   # slicerio is (i, j, k)
    direction = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
    assert np.allclose(segmentation["ijkToLPS"][:3, :3], direction)
    assert np.allclose(segmentation["ijkToLPS"][:3, 3], image.GetOrigin())


def test_ensemble_tta_uncertainty_and_json_progress(checkpoint, tmp_path, capsys):
    root, model_path = checkpoint
    folder = root / "Dataset900_Phantom" / "imagesTs"
    assert main(["predict", str(folder), "--model", str(model_path), str(model_path), "--out", str(tmp_path / "same"),
                 "--uncertainty", "--progress", "none"]) == 0
    same = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "same" / "phantom03_uncertainty.nii.gz")))
    assert not same.any()                                   # identical members never disagree
    assert main(["predict", str(folder), "--model", str(model_path), str(model_path), "--out", str(tmp_path),
                 "--tta", "--uncertainty", "--probabilities", "--progress", "json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    fractions = [line["fraction"] for line in lines]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert sum(line["stage"] == "predict" for line in lines) == 16 + 1      # 2 models x 8 mirrorings, + start
    uncertainty = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "phantom03_uncertainty.nii.gz")))
    probabilities = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "phantom03_probabilities.nii.gz")))
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "phantom03.nii.gz")))
    assert uncertainty.min() >= 0 and 0 < uncertainty.max() <= 1   # an under-trained model's mirrorings disagree
    assert probabilities.shape == labels.shape and 0 <= probabilities.min() and probabilities.max() <= 1
    inside = (probabilities > 0.5) == (labels == 1)
    assert inside.mean() > 0.99        # argmax of two classes = threshold at 0.5, up to interpolation at edges


def test_dicom_input_gives_seg_and_rtstruct_referencing_the_series(everything_model, shared_data, tmp_path, capsys):
    case = shared_data / "sts_sarcoma_ibsi" / "STS_019" / "ct_dicom"
    assert main(["predict", str(case), "--model", str(everything_model), "--out", str(tmp_path),
                 "--format", "nifti", "dicom-seg", "rtstruct", "--progress", "none"]) == 0
    series = choose_series(scan_folder(case / "image"))
    image = read_series(series)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "ct_dicom.nii.gz")))
    assert labels.all()                                           # the biased model marks everything
    from dicom_validation import assert_valid_dicom

    for written in ("ct_dicom_seg.dcm", "ct_dicom_rtstruct.dcm"):
        assert_valid_dicom(tmp_path / written)
    seg_labels, names = read_seg(tmp_path / "ct_dicom_seg.dcm", image, series.frame_of_reference)
    assert names == {1: "GTV"} and np.array_equal(seg_labels, labels)
    structure_set = read_rtstruct(tmp_path / "ct_dicom_rtstruct.dcm")
    assert structure_set.referenced_series == series.uid
    assert np.array_equal(rasterise(select_rois(structure_set, "GTV"), image), labels)
    assert pydicom.dcmread(tmp_path / "ct_dicom_seg.dcm").SeriesDescription.endswith("not clinically approved")


def test_bad_inputs_fail_clearly_and_write_nothing(checkpoint, shared_data, tmp_path, capsys):
    root, model_path = checkpoint
    image_path = next((root / "Dataset900_Phantom" / "imagesTs").iterdir())
    out = tmp_path / "out"
    assert main(["predict", str(image_path), "--model", str(model_path), "--out", str(out),
                 "--format", "dicom-seg", "--progress", "none"]) == 2
    assert "need a DICOM input series" in capsys.readouterr().err
    mr = shared_data / "brain_tumor_progression" / "01" / "Pre_Scan_T1.nii.gz"
    assert main(["predict", str(mr), "--model", str(model_path), "--out", str(out), "--progress", "none"]) == 2
    assert "does not look like a CT" in capsys.readouterr().err
    assert not out.exists()                     # created by the run, nothing written: removed (issue 14, 16d)
    pickle = tmp_path / "model.pth"
    torch.save({"a": torch.zeros(1)}, pickle)
    assert main(["predict", str(image_path), "--model", str(pickle), "--out", str(out)]) == 2
    assert "error" in capsys.readouterr().err


def test_crop_to_the_lungs_keeps_the_input_grid(checkpoint, tmp_path):
    root, model_path = checkpoint
    image_path = next((root / "Dataset900_Phantom" / "imagesTs").iterdir())
    assert main(["predict", str(image_path), "--model", str(model_path), "--out", str(tmp_path), "--crop", "lungs",
                 "--progress", "none"]) == 0
    written = sitk.ReadImage(str(tmp_path / "phantom03.nii.gz"))
    image = sitk.ReadImage(str(image_path))
    assert written.GetSize() == image.GetSize() and np.allclose(written.GetOrigin(), image.GetOrigin())


def test_predict_defaults_come_from_the_models_plan(everything_model, tmp_path):
    """A lung-cpu model crops to the lungs unless told otherwise (a model that calls every voxel GTV shows where)."""
    model, header = load_model(everything_model)
    plan = {**header["plan"], "inference": {"overlap": 0.25, "crop": "lungs"}}
    lung_cpu = tmp_path / "lung_cpu.safetensors"
    save_checkpoint(lung_cpu, model, NetworkConfig.from_dict(header["network"]),
                    {**{k: v for k, v in header.items() if k not in ("network", "format", "provenance")}, "plan": plan})
    image_path = everything_model.parent / "Dataset900_Phantom" / "imagesTs" / "phantom03_0000.nii.gz"
    for name, options in (("default", []), ("none", ["--crop", "none"])):
        assert main(["predict", str(image_path), "--model", str(lung_cpu), "--out", str(tmp_path / name),
                     "--progress", "none", *options]) == 0
    cropped = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "default" / "phantom03.nii.gz")))
    whole = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "none" / "phantom03.nii.gz")))
    assert whole.all() and 0 < cropped.sum() < 0.9 * whole.size


def _predict_process(inputs, model, out, *options, limit=None):
    """The real ``diffumamba predict`` in a child process, optionally under a file-size limit (what a full disk
    looks like to a writer; Python ignores SIGXFSZ, so writes past it fail instead of killing the process)."""
    import subprocess
    import sys

    prefix = f"import resource; resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); " if limit else ""
    code = prefix + "import sys; from diffumamba.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.Popen([sys.executable, "-c", code, "predict", *map(str, inputs), "--model", str(model),
                             "--out", str(out), "--progress", "none", *options],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_full_disk_fails_predict_and_leaves_no_truncated_file(checkpoint, tmp_path):
    """ITK's NIfTI writer cuts the file at the limit without raising: before issue 14 this exited 0."""
    root, model_path = checkpoint
    image_path = next((root / "Dataset900_Phantom" / "imagesTs").iterdir())
    out = tmp_path / "out"
    child = _predict_process([image_path], model_path, out, "--probabilities", limit=20000)
    stdout, stderr = child.communicate(timeout=300)
    assert child.returncode == 2, stdout + stderr
    assert f"could not write {out / 'phantom03.nii.gz'}: the file is truncated" in stderr
    assert "1 of 1 case(s) failed: phantom03" in stderr and "wrote" not in stdout
    assert not out.exists()                                   # nothing half-written, no empty folder


def test_two_predicts_into_one_folder_do_not_mix(checkpoint, tmp_path):
    """The second run is refused while the first holds --out; the first's files are its own, verified."""
    import shutil
    import time

    root, model_path = checkpoint
    image_path = next((root / "Dataset900_Phantom" / "imagesTs").iterdir())
    batch = tmp_path / "batch"
    batch.mkdir()
    for i in range(4):                                         # long enough for the second run to meet it
        shutil.copy(image_path, batch / f"case{i}_0000.nii.gz")
    out = tmp_path / "out"
    first = _predict_process([batch], model_path, out, "--tta")
    deadline = time.monotonic() + 240
    while not (out / ".diffumamba.lock").exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    second = _predict_process([image_path], model_path, out)
    second_out, second_err = second.communicate(timeout=300)
    first_out, first_err = first.communicate(timeout=1200)     # 4 cases with TTA: minutes on a loaded 2-core CPU
    assert first.returncode == 0, first_err
    assert second.returncode == 2 and f"another run is writing {out} (pid {first.pid})" in second_err, second_err
    assert sorted(p.name for p in out.iterdir()) == [f"case{i}.nii.gz" for i in range(4)]   # no lock, no partials


def test_predict_keeps_an_existing_file_of_the_same_name_unless_overwrite(checkpoint, tmp_path, capsys):
    """Issue 28, D17: an edited segmentation already in --out is named and kept (exit 2, before any case is predicted);
    --overwrite replaces it; an output that would be the input itself is refused even with --overwrite."""
    import shutil

    root, model_path = checkpoint
    image_path = next((root / "Dataset900_Phantom" / "imagesTs").iterdir())
    out = tmp_path / "out"
    out.mkdir()
    edited = out / "phantom03.nii.gz"
    edited.write_bytes(b"a clinician's edited GTV")
    assert main(["predict", str(image_path), "--model", str(model_path), "--out", str(out), "--progress", "none"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "already holds phantom03.nii.gz, which this run would replace" in error[0], error
    assert "--overwrite" in error[0] and edited.read_bytes() == b"a clinician's edited GTV"
    assert main(["predict", str(image_path), "--model", str(model_path), "--out", str(out), "--progress", "none",
                 "--overwrite"]) == 0
    assert sitk.ReadImage(str(edited)).GetSize() == sitk.ReadImage(str(image_path)).GetSize()
    same = tmp_path / "same"
    same.mkdir()
    shutil.copy(image_path, same / "phantom03.nii.gz")
    before = (same / "phantom03.nii.gz").read_bytes()
    assert main(["predict", str(same / "phantom03.nii.gz"), "--model", str(model_path), "--out", str(same),
                 "--progress", "none", "--overwrite"]) == 2
    assert "would replace the input" in capsys.readouterr().err
    assert (same / "phantom03.nii.gz").read_bytes() == before
