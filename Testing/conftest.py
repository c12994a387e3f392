"""Shared fixtures for the DiffUMambaSeg test suite (run outside Slicer)."""

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


@pytest.fixture
def shared_data():
    """The real patient data beside the repository (``../shared/data``, or $DIFFUMAMBA_SHARED_DATA); CI has it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder not found at {SHARED_DATA}")
    return SHARED_DATA
