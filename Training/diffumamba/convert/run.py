"""The conversion loop shared by every source: convert case by case, report failures by name, go on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from .writer import DatasetWriter

__all__ = ["SourceCase", "ConversionReport", "convert_cases"]


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
