"""The conversion loop shared by every source: convert case by case, report failures by name, go on."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from .writer import DatasetWriter

__all__ = ["SourceCase", "ConversionReport", "convert_cases", "DATASET_ITEMS", "replaces_a_dataset", "build_aside"]

DATASET_ITEMS = ("imagesTr", "labelsTr", "dataset.json")   # what a conversion writes (and --overwrite replaces)


@dataclass(frozen=True)
class SourceCase:
    """A case to convert: its name and a loader returning ``(images per channel, label map)``."""

    name: str
    load: Callable[[], tuple[Sequence, object]]


@dataclass
class ConversionReport:
    converted: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def convert_cases(cases: Iterable[SourceCase], writer: DatasetWriter, report: ConversionReport,
                  progress: Callable = lambda items: items, warn: Callable[[str], None] = print) -> ConversionReport:
    """Convert every case; a case that fails is recorded with its reason and the others continue.

    Failures are expected here (one corrupt export among hundreds), so any exception of a case is caught;
    Ctrl-C still stops the run, leaving only whole cases behind.
    """
    for case in progress(list(cases)):
        try:
            images, label = case.load()
            writer.add(case.name, images, label)
        except Exception as err:  # noqa: BLE001 - reported per case, see docstring
            reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
            if not isinstance(err, (ValueError, OSError, RuntimeError)):
                reason = f"{type(err).__name__}: {reason}"
            report.failed.append((case.name, reason))
            warn(f"{case.name}: FAILED: {reason}")
        else:
            report.converted.append(case.name)
    return report


def replaces_a_dataset(out: Path) -> bool:
    """``out`` holds something a conversion would replace."""
    out = Path(out)
    return any((out / item).exists() or (out / item).is_symlink() for item in DATASET_ITEMS)


class build_aside:
    """Context manager for ``convert --overwrite``: the new dataset is written into ``folder``, a hidden
    sibling of ``out``; ``commit()`` swaps it in (the old imagesTr, labelsTr and dataset.json renamed aside,
    the new ones renamed in, dataset.json last, then the old ones deleted). Other files in ``out`` stay.
    Leaving the block without ``commit()`` (every case failed, an error, Ctrl-C) deletes the new files only:
    the old dataset is untouched."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.folder = Path(tempfile.mkdtemp(dir=self.out.parent, prefix=f".{self.out.name}.new-"))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        shutil.rmtree(self.folder, ignore_errors=True)
        return False

    def commit(self) -> None:
        old = Path(tempfile.mkdtemp(dir=self.out.parent, prefix=f".{self.out.name}.old-"))
        moved = []
        try:
            for item in DATASET_ITEMS:
                if (self.out / item).exists() or (self.out / item).is_symlink():
                    os.replace(self.out / item, old / item)
                    moved.append(item)
            self.out.mkdir(parents=True, exist_ok=True)
            for item in DATASET_ITEMS:
                if (self.folder / item).exists():
                    os.replace(self.folder / item, self.out / item)
        except OSError as err:
            for item in DATASET_ITEMS:                  # put the old dataset back as it was
                if item in moved:
                    try:
                        if (self.out / item).is_dir() and not (self.out / item).is_symlink():
                            shutil.rmtree(self.out / item)
                        elif (self.out / item).exists():
                            (self.out / item).unlink()
                        os.replace(old / item, self.out / item)
                    except OSError:
                        raise OSError(f"could not replace the dataset in {self.out} ({err}); its old files are in "
                                      f"{old}: move them back by hand") from None
            shutil.rmtree(old, ignore_errors=True)
            raise OSError(f"could not replace the dataset in {self.out}: {err}; the old dataset was kept") from None
        shutil.rmtree(old, ignore_errors=True)
