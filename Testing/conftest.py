"""Shared fixtures for the DiffUMambaSeg test suite (run outside Slicer)."""

import json

import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.manual_seed(0)
    yield


import os
from pathlib import Path

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
