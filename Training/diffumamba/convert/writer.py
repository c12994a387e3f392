"""Writes an nnU-Net v2 raw dataset one whole case at a time.

A case's files are written under hidden temporary names and renamed only once every file of the case
exists, so an interrupted or failed conversion never leaves half a case that training would pick up.
``dataset.json`` is written last, listing exactly the cases that were converted.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from ..data.dataset import nonfinite_count
from ..files import atomic_write_text, remove_orphans, write_error
from ..geometry import grid_differences
from ..imageio import partial_path, write_image_verified

__all__ = ["DatasetWriter", "check_label_grid", "SAFE_CASE_NAME"]

SAFE_CASE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class DatasetWriter:
    """Collects converted cases into ``root`` (imagesTr/, labelsTr/, dataset.json).

    Args:
        root: the dataset folder; it must not hold a dataset already unless ``overwrite``.
        channel_names: modality per channel ("CT" selects CT normalisation).
        label_names: foreground label names for values 1, 2, ...
        file_ending: image format of the written files.
    """

    def __init__(self, root: Path, channel_names: Sequence[str], label_names: Sequence[str],
                 file_ending: str = ".nii.gz", overwrite: bool = False, description: str = "",
                 append: bool = False, task: str = "segmentation", group_pattern: str | None = None):
        self.root = Path(root)
        self.task = task
        self.group_pattern = group_pattern
        self.channel_names, self.label_names = list(channel_names), list(label_names)
        self.file_ending, self.description = file_ending, description
        self.cases: list[str] = []
        exists = (self.root / "dataset.json").exists()
        if exists and append:
            self._adopt_existing()
        elif exists and not overwrite:
            raise ValueError(f"{self.root} already holds a dataset; choose another folder, --append or --overwrite")
        elif overwrite:
            for folder in ("imagesTr", "labelsTr"):
                shutil.rmtree(self.root / folder, ignore_errors=True)
            (self.root / "dataset.json").unlink(missing_ok=True)

    def _adopt_existing(self) -> None:
        """Append to a dataset made before: channels, labels and file format must agree."""
        from ..data.dataset import RawDataset

        existing = RawDataset(self.root)
        mine = {"background": 0, **{n: i + 1 for i, n in enumerate(self.label_names)}}
        theirs = (existing.channel_names, existing.labels, existing.file_ending, existing.meta.get("task", "segmentation"))
        if theirs != (self.channel_names, mine, self.file_ending, self.task):
            raise ValueError(f"--append: {self.root} has channels {theirs[0]}, labels {theirs[1]}, {theirs[2]} files and "
                             f"task {theirs[3]}; this conversion has {self.channel_names}, {mine}, {self.file_ending} "
                             f"and {self.task}")
        self.cases = [case.name for case in existing.training_cases()]
        self.description = existing.meta.get("description", self.description)
        recorded = existing.meta.get("group_pattern")
        if recorded and self.group_pattern and recorded != self.group_pattern:
            raise ValueError(f"--append: {self.root} groups its cases by patient with {recorded!r}, this conversion "
                             f"with {self.group_pattern!r}")
        self.group_pattern = recorded or self.group_pattern

    def add(self, name: str, images: Sequence, label) -> None:
        """Write one case (SimpleITK images, one per channel, and its label map on the same grid)."""
        import SimpleITK as sitk

        if not SAFE_CASE_NAME.match(name):
            raise ValueError(f"case name {name!r} must be letters, digits, '.', '_' or '-'")
        if name in self.cases:
            raise ValueError(f"a case named {name!r} is already in the dataset")
        if len(images) != len(self.channel_names):
            raise ValueError(f"{len(images)} channel(s) given, the dataset has {len(self.channel_names)}")
        for channel, image in enumerate(images):
            check_label_grid(image, label)
            bad = nonfinite_count(sitk.GetArrayViewFromImage(image))
            if bad:                      # refused here, not first by train: the dataset would carry them silently
                raise ValueError(f"channel {channel} has {bad} NaN/Inf voxel(s); fix the source image")
        values = np.unique(sitk.GetArrayViewFromImage(label))
        undeclared = sorted(int(v) for v in values if not 0 <= v <= len(self.label_names))
        if undeclared:
            raise ValueError(f"label values {undeclared} are not declared (labels: {', '.join(self.label_names)}); "
                             "name every foreground value with --labels")
        targets = [self.root / "imagesTr" / f"{name}_{c:04d}{self.file_ending}" for c in range(len(images))]
        targets.append(self.root / "labelsTr" / f"{name}{self.file_ending}")
        for folder in ("imagesTr", "labelsTr"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
            remove_orphans(self.root / folder)          # partial files of killed conversions
        temporaries = [partial_path(t) for t in targets]
        try:
            for image, temporary, target in zip([*images, sitk.Cast(label, sitk.sitkUInt8)], temporaries, targets):
                try:
                    write_image_verified(image, temporary)   # every file read back before any is renamed
                except OSError as err:
                    raise write_error(target, err, temporary) from err
            for temporary, target in zip(temporaries, targets):
                os.replace(temporary, target)
        finally:
            for temporary in temporaries:
                temporary.unlink(missing_ok=True)
        self.cases.append(name)

    def finish(self) -> Path:
        """Write dataset.json for the converted cases; refuse an empty dataset."""
        if not self.cases:
            raise ValueError("no case was converted")
        meta = {"channel_names": {str(i): c for i, c in enumerate(self.channel_names)},
                "labels": {"background": 0, **{n: i + 1 for i, n in enumerate(self.label_names)}},
                "file_ending": self.file_ending, "numTraining": len(self.cases),
                "description": self.description or "converted by diffumamba convert"}
        if self.task != "segmentation":
            meta["task"] = self.task
        if self.group_pattern:            # the folds keep one patient's cases together (training/splits.py)
            meta["group_pattern"] = self.group_pattern
        path = self.root / "dataset.json"
        atomic_write_text(path, json.dumps(meta, indent=2) + "\n")
        return path


def check_label_grid(image, label) -> None:
    """A label map must lie on its image's grid: same size, spacing, origin and direction."""
    problems = grid_differences(label, image)
    if problems:
        raise ValueError("label map is not on the image grid: " + "; ".join(problems))
