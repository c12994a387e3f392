"""Reading a dataset in the nnU-Net v2 raw format, so a researcher's nnU-Net (or MSD-converted) data
works unchanged.

    Dataset/
      dataset.json          {"channel_names": {"0": "CT"}, "labels": {"background": 0, "GTV": 1},
                             "file_ending": ".nii.gz", "numTraining": N}
      imagesTr/CASE_0000.nii.gz ...   one file per channel, 4-digit channel suffix
      labelsTr/CASE.nii.gz
      imagesTs/CASE_0000.nii.gz       (optional)

Everything a later step would trip over is checked up front and reported at once: missing channels
or labels, stray files, unknown modalities, label values not declared in dataset.json (on request,
since it reads every label).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

__all__ = ["Case", "RawDataset", "check_finite", "nonfinite_count", "replacing_nonfinite"]

# Set by ``train --replace-nonfinite`` around the reading of cases (fingerprint and preprocessing).
_REPLACE_NONFINITE = contextvars.ContextVar("diffumamba_replace_nonfinite", default=False)

_CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass(frozen=True)
class Case:
    """One case: its image file per channel (in channel order) and its label file, if any."""

    name: str
    images: tuple[Path, ...]
    label: Optional[Path] = None


class RawDataset:
    """An nnU-Net v2 raw dataset folder.

    Attributes:
        root: the dataset folder.
        channel_names: modality per channel, e.g. ``["CT"]`` (nnU-Net normalises "CT" differently).
        labels: label name -> integer value, background included.
        file_ending: e.g. ``".nii.gz"``.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        meta_path = self.root / "dataset.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"not an nnU-Net raw dataset: {meta_path} is missing")
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{meta_path} is not valid JSON: {err}") from None
        missing = [k for k in ("channel_names", "labels", "file_ending") if k not in meta]
        if missing:
            raise ValueError(f"{meta_path} lacks {', '.join(missing)} (nnU-Net v2 format)")
        channels = meta["channel_names"]
        try:
            self.channel_names = [channels[str(i)] for i in range(len(channels))]
        except KeyError:
            raise ValueError(f"{meta_path}: channel_names must be keyed 0..{len(channels) - 1}") from None
        self.labels = {str(k): _label_value(k, v, meta_path) for k, v in meta["labels"].items()}
        if 0 not in self.labels.values():
            raise ValueError(f"{meta_path}: labels must include background = 0")
        self.file_ending = meta["file_ending"]
        self.meta = meta

    @property
    def num_channels(self) -> int:
        return len(self.channel_names)

    def training_cases(self) -> list[Case]:
        """Every case in imagesTr with all its channels and its label in labelsTr."""
        cases = self._cases(self.root / "imagesTr", with_labels=True)
        expected = self.meta.get("numTraining")
        if expected is not None and expected != len(cases):
            raise ValueError(f"dataset.json says numTraining = {expected} but imagesTr holds {len(cases)} cases")
        return cases

    def test_cases(self) -> list[Case]:
        folder = self.root / "imagesTs"
        return self._cases(folder, with_labels=False) if folder.is_dir() else []

    def _cases(self, folder: Path, with_labels: bool) -> list[Case]:
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} does not exist")
        channels: dict[str, dict[int, Path]] = {}
        problems = []
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or not path.name.endswith(self.file_ending):
                continue
            match = _CHANNEL_FILE.match(path.name[: -len(self.file_ending)])
            if not match:
                problems.append(f"{path.name}: no _XXXX channel suffix")
                continue
            channels.setdefault(match["case"], {})[int(match["channel"])] = path
        cases = []
        for name, files in sorted(channels.items()):
            if sorted(files) != list(range(self.num_channels)):
                problems.append(f"{name}: channels {sorted(files)}, expected 0..{self.num_channels - 1}")
                continue
            label = self.root / "labelsTr" / f"{name}{self.file_ending}" if with_labels else None
            if label is not None and not label.is_file():
                problems.append(f"{name}: label {label.relative_to(self.root)} is missing")
                continue
            cases.append(Case(name, tuple(files[c] for c in range(self.num_channels)), label))
        if problems:
            raise ValueError(f"{folder}: " + "; ".join(problems))
        if not cases:
            raise ValueError(f"{folder} holds no cases ending in {self.file_ending}")
        return cases


def _label_value(name, value, meta_path: Path) -> int:
    if isinstance(value, (list, tuple)):
        raise ValueError(f"{meta_path}: label {name!r} is a region (list of values); only plain labels are supported")
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{meta_path}: label {name!r} must be a non-negative integer, got {value!r}")
    return value


@contextlib.contextmanager
def replacing_nonfinite(enabled: bool = True) -> Iterator[None]:
    """Within this block, ``check_finite`` called without ``replace`` replaces NaN/Inf voxels instead of refusing
    them (how ``train --replace-nonfinite`` reaches the reading of every case)."""
    token = _REPLACE_NONFINITE.set(bool(enabled))
    try:
        yield
    finally:
        _REPLACE_NONFINITE.reset(token)


def check_finite(array: np.ndarray, source, replace: Optional[bool] = None) -> np.ndarray:
    """``array`` itself when every voxel is finite. Otherwise a ValueError naming ``source`` (the file) and the count
    of NaN/Inf voxels, or, with ``replace`` (default: inside ``replacing_nonfinite``), a copy whose non-finite voxels
    hold the image's smallest finite value, reported on stdout. One NaN would otherwise spread through resampling,
    intensity statistics and training to every case and every weight."""
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.floating):
        return array
    bad = ~np.isfinite(array)
    count = int(np.count_nonzero(bad))
    if not count:
        return array
    if replace is None:
        replace = _REPLACE_NONFINITE.get()
    if not replace:
        raise ValueError(f"{source} has {count} NaN/Inf voxel(s): fix the image, or pass --replace-nonfinite to "
                         "replace them with the image's minimum")
    if count == array.size:
        raise ValueError(f"{source} has {count} NaN/Inf voxel(s) and no finite voxel: the image is unusable")
    minimum = array[~bad].min()
    fixed = array.copy()
    fixed[bad] = minimum
    print(f"{source}: replaced {count} NaN/Inf voxel(s) with the image's minimum ({float(minimum):g})", flush=True)
    return fixed


def nonfinite_count(array: np.ndarray) -> int:
    """How many values of ``array`` are NaN/Inf. The usual answer, none, comes from the float64 sum, without a
    boolean temporary the size of the array: NaN/Inf make the sum non-finite and float32 values cannot overflow it
    (float64 values can; then every value is tested)."""
    with np.errstate(invalid="ignore", over="ignore"):
        if np.isfinite(np.sum(array, dtype=np.float64)):
            return 0
    return int(np.count_nonzero(~np.isfinite(array)))
