"""Finding image/label file pairs by pattern, e.g. ``{case}_image.nrrd`` + ``{case}_label.nrrd``.

A pattern is a path relative to the source folder in which ``{case}`` stands for the case id (one path
component or part of one, so ``{case}/Pre_Scan_T1.nii.gz`` matches case folders). Several patterns can
be given, each with its own case-name template, so one source yields e.g. ``01_pre`` and ``01_post``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PairPattern", "SourcePair", "find_pairs"]


@dataclass(frozen=True)
class PairPattern:
    image: str
    label: str
    name: str = "{case}"

    def __post_init__(self):
        for what, pattern in (("image", self.image), ("label", self.label), ("name", self.name)):
            if pattern.count("{case}") != 1:
                raise ValueError(f"the {what} pattern {pattern!r} must contain {{case}} exactly once")


@dataclass(frozen=True)
class SourcePair:
    name: str
    image: Path
    label: Path
    case: str = ""        # the {case} part of the file names


def find_pairs(source: Path, patterns: list[PairPattern]) -> tuple[list[SourcePair], list[tuple[str, str]]]:
    """(pairs found, [(case, problem)] for images without a label). Sorted by case name."""
    if not source.is_dir():
        raise FileNotFoundError(f"source folder does not exist: {source}")
    pairs, problems = [], []
    for pattern in patterns:
        prefix, suffix = pattern.image.split("{case}")
        matcher = re.compile(re.escape(prefix) + r"(?P<case>[^/]+?)" + re.escape(suffix) + "$")
        for path in sorted(source.glob(pattern.image.replace("{case}", "*"))):
            match = matcher.match(path.relative_to(source).as_posix())
            if not match:
                continue
            case = match["case"]
            name = pattern.name.replace("{case}", case)
            label = source / pattern.label.replace("{case}", case)
            if label.is_file():
                pairs.append(SourcePair(name, path, label, case))
            else:
                problems.append((name, f"no label file {label}"))
    if not pairs and not problems:
        raise ValueError(f"no file in {source} matches " + ", ".join(p.image for p in patterns))
    return sorted(pairs, key=lambda p: p.name), problems
