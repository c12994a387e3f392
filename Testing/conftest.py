"""Shared fixtures for the DiffUMambaSeg test suite (run outside Slicer)."""

import json
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

import pytest
import torch


SLOW_LIST = Path(__file__).with_name("slow_tests.txt")


WORKER_THREADS = 1   # `-n 2` on 2 cores: one PyTorch thread per xdist worker, in its tests and the commands they start


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = str(WORKER_THREADS)
        torch.set_num_threads(WORKER_THREADS)
    elif hasattr(config.option, "loadscopereorder"):
        # xdist would hand out the files with most tests first; ours (pytest_collection_modifyitems) start the
        # longest first, which is what keeps a worker from ending on a 5-minute test
        config.option.loadscopereorder = False
    config.addinivalue_line("markers", "data: reads the real patient data in ../shared/data")
    config.addinivalue_line("markers", "slow: took 5 s or more on the 2-core CI machine (listed in slow_tests.txt)")


THRESHOLD_S = 5.0   # a test this slow in a full run is listed in slow_tests.txt


def slow_tests() -> dict:
    """Test name -> seconds it took in the last measurement (``slow_tests.txt``: one "name seconds" per line)."""
    lines = SLOW_LIST.read_text().splitlines() if SLOW_LIST.is_file() else []
    return {parts[0]: float(parts[1]) if len(parts) > 1 else THRESHOLD_S for parts in map(str.split, lines) if parts}


def pytest_collection_modifyitems(config, items):
    """``data`` from the fixtures a test uses; ``slow`` from the measured list, so ``-m "not slow"`` is a fast
    subset (regenerate the list with ``python Testing/measure_slow_tests.py``). The files that took longest run
    first, so that two workers (``-n 2 --dist loadfile``) both start on a long one and neither ends on one."""
    slow = slow_tests()
    file_seconds: dict = {}
    counted = set()                  # a parametrised test's entry holds all its cases' seconds: count it once
    for item in items:
        if "shared_data" in item.fixturenames:
            item.add_marker(pytest.mark.data)
        name = item.nodeid.split("[")[0]
        entry = name if name in slow else item.nodeid
        if entry in slow:
            item.add_marker(pytest.mark.slow)
            path = item.nodeid.split("::")[0]
            if entry not in counted:
                counted.add(entry)
                file_seconds[path] = file_seconds.get(path, 0.0) + slow[entry]
    items.sort(key=lambda item: -file_seconds.get(item.nodeid.split("::")[0], 0.0))   # stable within a file


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.manual_seed(0)
    yield
    if os.environ.get("PYTEST_XDIST_WORKER"):       # a test's `--threads` must not change the next test's
        torch.set_num_threads(WORKER_THREADS)


REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DIFFUMAMBA_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data():
    """The real patient data beside the repository (``../shared/data``, or $DIFFUMAMBA_SHARED_DATA); CI has it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder not found at {SHARED_DATA}")
    return SHARED_DATA


def make_dataset(root, cases, channels=("CT",), ending=".nrrd", labels=None, **extra):
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    meta = {"channel_names": {str(i): c for i, c in enumerate(channels)},
            "labels": labels or {"background": 0, "GTV": 1}, "file_ending": ending, "numTraining": len(cases)}
    (root / "dataset.json").write_text(json.dumps({**meta, **extra}))
    return root


@pytest.fixture
def lung_dataset(tmp_path, shared_data):
    """The two real pyradiomics lung CTs as an nnU-Net raw dataset (links, no copies)."""
    root = make_dataset(tmp_path / "Dataset001_Lung", ["lung1", "lung2"])
    for case in ("lung1", "lung2"):
        (root / "imagesTr" / f"{case}_0000.nrrd").symlink_to(shared_data / "pyradiomics_lung_ct" / f"{case}_image.nrrd")
        (root / "labelsTr" / f"{case}.nrrd").symlink_to(shared_data / "pyradiomics_lung_ct" / f"{case}_label.nrrd")
    return root


@pytest.fixture
def phantoms(tmp_path):
    """Four CT-like volumes (air at -700 HU) with a bright 5-voxel-radius sphere at a random offset."""
    return write_phantoms(tmp_path / "Dataset900_Phantom")


def write_phantoms(root):
    """The ``phantoms`` dataset, written into ``root`` (for fixtures of a wider scope)."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        grid = np.indices((24, 32, 32)) - (np.array([12, 16, 16]) + rng.integers(-3, 4, 3))[:, None, None, None]
        label = ((grid ** 2).sum(0) <= 25).astype(np.uint8)
        image = (rng.normal(-700, 50, label.shape) + label.astype(int) * 700).astype(np.int16)
        for array, path in ((image, root / "imagesTr" / f"c{i}_0000.nii.gz"), (label, root / "labelsTr" / f"c{i}.nii.gz")):
            written = sitk.GetImageFromArray(array)
            written.SetSpacing((1.0, 1.0, 2.0))
            sitk.WriteImage(written, str(path))
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0, "tumour": 1},
                                                   "file_ending": ".nii.gz", "numTraining": 4}))
    return root


def train_tiny(dataset, root, name="run", network="diffumamba", epochs=1, iterations=2):
    """A tiny network (4-8 features, 16 x 32 x 32 patches) trained briefly on ``dataset`` with the real
    ``train`` command; its weights are barely trained, so tests use it to check transport, not accuracy."""
    from diffumamba.cli import main

    assert main(["train", str(dataset), "--preprocessed", str(root / f"pre_{name}"), "--run-dir", str(root / name),
                 "--fold", "all", "--epochs", str(epochs), "--iterations", str(iterations), "--features", "4", "8",
                 "--max-patch", "16", "32", "32", "--no-amp", "--network", network]) == 0
    return root / name / "last.safetensors"


@pytest.fixture(scope="session")
def correction_model(tmp_path_factory):
    """A correction model trained briefly on the phantoms (transport, not accuracy) and the phantoms: one per session,
    shared by the correct/serve tests."""
    from diffumamba.cli import main

    root = tmp_path_factory.mktemp("correction")
    phantoms = write_phantoms(root / "Dataset900_Phantom")
    assert main(["train", str(phantoms), "--preprocessed", str(root / "pre"), "--run-dir", str(root / "run"),
                 "--fold", "all", "--epochs", "1", "--iterations", "3", "--features", "4", "8", "--max-patch", "16",
                 "32", "32", "--no-amp", "--network", "resunet", "--task", "correction"]) == 0
    return root / "run" / "last.safetensors", phantoms


def tumour_point(phantoms, case="c0"):
    """The phantom's tumour centre in LPS mm, and the image."""
    image = sitk.ReadImage(str(phantoms / "imagesTr" / f"{case}_0000.nii.gz"))
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(phantoms / "labelsTr" / f"{case}.nii.gz")))
    centre = np.argwhere(label > 0).mean(0)[::-1]
    return list(image.TransformContinuousIndexToPhysicalPoint([float(c) for c in centre])), image


CT_STATS = {"mean": 2.3, "std": 100.5, "percentile_00_5": -456.6, "percentile_99_5": 90.0}


def tumour_case(shared_data, name="lung2", half_depth=15, half_width=48):
    """A real lung tumour (pyradiomics lung1: 1.4 ml nodule; lung2: 48 ml) and its surroundings, preprocessed to
    5 x 1.2 x 1.2 mm (lung2: 30 x 50 x 50 voxels): real data small enough to train on in a test."""
    from diffumamba.data.preprocessing import preprocess_case
    from diffumamba.training.sampling import TrainingCase

    image = sitk.ReadImage(str(shared_data / "pyradiomics_lung_ct" / f"{name}_image.nrrd"))
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(shared_data / "pyradiomics_lung_ct" / f"{name}_label.nrrd")))
    z, y, x = np.argwhere(label > 0).mean(0).astype(int)
    box = (slice(max(z - half_depth, 0), z + half_depth), slice(y - half_width, y + half_width),
           slice(x - half_width, x + half_width))
    data = sitk.GetArrayFromImage(image).astype(np.float32)[None][(slice(None), *box)]
    spacing = tuple(reversed(image.GetSpacing()))
    out, out_label, _ = preprocess_case(data, label[box].astype(np.int16), spacing, (5.0, 1.2, 1.2), ["CT"],
                                        [CT_STATS], image_order=1)
    return TrainingCase.from_arrays(name, out, out_label)


@pytest.fixture(scope="module")
def sarcoma(shared_data):
    """The real STS_019 CT series (InputCase with slices) and its RTSTRUCT GTV rasterised on it."""
    from diffumamba.dicom.rtstruct import rasterise, read_rtstruct
    from diffumamba.dicom.series import choose_series, read_pixels, scan_folder, sorted_slices
    from diffumamba.inference.inputs import InputCase

    folder = shared_data / "sts_sarcoma_ibsi" / "STS_019" / "ct_dicom"
    info = choose_series(scan_folder(folder / "image"))
    slices = sorted_slices(info, modalities=("CT",))
    case = InputCase("ct", read_pixels(slices), "CT", slices)
    structure_set = read_rtstruct(folder / "rtstruct" / "RS.dcm")
    return folder, case, rasterise(structure_set.rois, case.image).astype(np.uint8)
