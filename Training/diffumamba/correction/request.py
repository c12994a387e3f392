"""A correction request as a user's tool states it: clicks in patient millimetres and the slices drawn by hand.

One JSON shape, read from a file by ``diffumamba correct --clicks`` and from a line by ``diffumamba serve``::

    {"coordinate_system": "LPS",
     "clicks": [{"point": [x, y, z], "label": "include"}, {"point": [x, y, z], "label": "exclude"}],
     "fixed_slices": [41, 42]}

``point`` is a position in mm: LPS (DICOM's and ITK's patient coordinates, the default) or RAS (Slicer's).
``fixed_slices`` are indices along the image's slice axis (k, from 0) where the given mask is exactly what the
user drew; the network redoes the rest of the volume to agree with them and never changes them.

Everything is validated here, into typed values, before any work: a worker serving a clinician must answer a
malformed line (a number where a path belongs, a 401-digit coordinate, JSON nested 100,000 deep) with one error
line and go on, never with a traceback (issue 28, D3/D4/D13).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from .clicks import Click

__all__ = ["CorrectionRequest", "CorrectJob", "decode_json", "parse_request", "parse_job", "grid_clicks",
           "drawn_slices", "MASK_SUFFIXES", "JOB_KEYS"]

LABELS = {"include": True, "positive": True, "exclude": False, "negative": False}
MAX_ABS_MM = 1e6                 # a point a kilometre away is no click on a scan: refused as malformed
MASK_SUFFIXES = (".nii.gz", ".nii", ".seg.nrrd", ".nrrd", ".mha")   # what the corrected mask can be written as
REQUEST_KEYS = {"coordinate_system", "clicks", "fixed_slices"}
JOB_KEYS = REQUEST_KEYS | {"id", "command", "image", "mask", "output"}


@dataclass(frozen=True)
class CorrectionRequest:
    points: list[tuple[float, float, float]]          # LPS mm
    positive: list[bool]
    fixed_slices: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class CorrectJob:
    """One whole correction: which files, and the request. What ``serve`` reads from a line and ``correct`` from
    its options; ``CorrectionService.correct`` takes nothing else."""

    image: Path
    mask: Optional[Path]
    output: Path
    request: CorrectionRequest


def decode_json(text: str, source: str):
    """The JSON value of ``text``; ValueError naming ``source`` for anything Python's decoder refuses, deep
    nesting (RecursionError) and integers too long to convert included."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError(f"{source}: JSON nested too deeply; see docs/correction.md for the request's shape") from None
    except ValueError as err:                           # JSONDecodeError, and int digits over Python's limit
        raise ValueError(f"{source}: not valid JSON ({err}); see docs/correction.md") from None


def _point(value, source: str, number: int) -> tuple[float, float, float]:
    """Three finite numbers (bool is no number here, though Python counts it as one)."""
    problem = f"{source}: click {number} needs 'point': three finite numbers (mm)"
    if not isinstance(value, list) or len(value) != 3:
        raise ValueError(problem)
    point = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"{problem}, not {json.dumps(v)[:40]}")
        try:
            number_mm = float(v)
        except OverflowError:
            raise ValueError(f"{problem}; {str(v)[:20]}... is too large") from None
        if not math.isfinite(number_mm) or abs(number_mm) > MAX_ABS_MM:
            raise ValueError(f"{problem} within {MAX_ABS_MM:g} mm of the origin, not {str(v)[:40]}")
        point.append(number_mm)
    return point[0], point[1], point[2]


def parse_request(value, source: str) -> CorrectionRequest:
    """The request in ``value`` (a decoded JSON object); ValueError naming ``source`` and the bad entry."""
    if not isinstance(value, dict):
        raise ValueError(f"{source}: expected a JSON object with 'clicks' (see docs/correction.md)")
    system = value.get("coordinate_system", "LPS")
    if not isinstance(system, str) or system.upper() not in ("LPS", "RAS"):
        raise ValueError(f"{source}: coordinate_system must be LPS or RAS, not {json.dumps(system)[:40]}")
    system = system.upper()
    clicks = value.get("clicks", [])
    if not isinstance(clicks, list):
        raise ValueError(f"{source}: 'clicks' must be a list of {{'point': [x, y, z], 'label': 'include'|'exclude'}}")
    points, positive = [], []
    for number, click in enumerate(clicks, start=1):
        if not isinstance(click, dict):
            raise ValueError(f"{source}: click {number} must be an object {{'point': [x, y, z], 'label': ...}}")
        x, y, z = _point(click.get("point"), source, number)
        label = click.get("label")
        if not isinstance(label, str) or label.lower() not in LABELS:
            raise ValueError(f"{source}: click {number} needs 'label': 'include' or 'exclude', not "
                             f"{json.dumps(label)[:40]}")
        points.append((-x, -y, z) if system == "RAS" else (x, y, z))
        positive.append(LABELS[label.lower()])
    fixed = value.get("fixed_slices", [])
    if not isinstance(fixed, list) or not all(isinstance(k, int) and not isinstance(k, bool) for k in fixed):
        raise ValueError(f"{source}: 'fixed_slices' must be a list of slice indices (integers)")
    return CorrectionRequest(points, positive, sorted(set(fixed)))


def _path(value, key: str, source: str, required: bool) -> Optional[Path]:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        raise ValueError(f"{source}: '{key}' must be a file path (a non-empty string)"
                         + ("" if required else " or null") + f", not {json.dumps(value)[:40]}")
    return Path(value)


def parse_job(value, source: str) -> CorrectJob:
    """A ``serve`` request line's ``correct`` command as a typed job; unknown keys are refused (a misspelt
    "fixed_slice" would otherwise be dropped without a word)."""
    if not isinstance(value, dict):
        raise ValueError(f"{source}: expected a JSON object")
    unknown = sorted(set(value) - JOB_KEYS)
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {', '.join(map(repr, unknown))[:200]}; a request has "
                         f"{', '.join(sorted(JOB_KEYS))}")
    job = CorrectJob(_path(value.get("image"), "image", source, True), _path(value.get("mask"), "mask", source, False),
                     _path(value.get("output"), "output", source, True), parse_request(value, source))
    check_outputs(job)
    return job


def check_outputs(job: CorrectJob, options: bool = False) -> None:
    """The output is a mask file we can write, and never one of the inputs (``files.check_not_an_input``).
    ``options``: name the command line's options (``--output``) rather than a request's keys (``output``)."""
    from ..files import check_not_an_input

    dash = "--" if options else ""
    if job.output.is_dir():
        raise ValueError(f"{dash}output {job.output} is a folder; give a file ending in {', '.join(MASK_SUFFIXES)}")
    if not job.output.name.lower().endswith(MASK_SUFFIXES):
        raise ValueError(f"{dash}output {job.output}: cannot write a mask of this file type; give a name ending in "
                         f"{', '.join(MASK_SUFFIXES)}")
    check_not_an_input(job.output, {f"{dash}image": job.image, f"{dash}mask": job.mask}, f"{dash}output")


def grid_clicks(request: CorrectionRequest, image, source: str) -> list[Click]:
    """The request's clicks as continuous (z, y, x) indices of ``image`` (SimpleITK); refuses a click outside it."""
    size = image.GetSize()
    clicks = []
    for number, (point, positive) in enumerate(zip(request.points, request.positive), start=1):
        index = image.TransformPhysicalPointToContinuousIndex(point)
        if any(i < -0.5 or i > n - 0.5 for i, n in zip(index, size)):
            raise ValueError(f"{source}: click {number} at {list(point)} mm (LPS) lies outside the image; "
                             "was it placed on another scan, or in RAS without \"coordinate_system\": \"RAS\"?")
        clicks.append(Click(tuple(reversed(index)), positive))
    return clicks


def drawn_slices(mask: np.ndarray, fixed_slices: list[int], source: str) -> Optional[np.ndarray]:
    """(2, z, y, x) evidence from the fixed slices of ``mask`` (tumour, other), or None without fixed slices."""
    if not fixed_slices:
        return None
    bad = [k for k in fixed_slices if not 0 <= k < mask.shape[0]]
    if bad:
        raise ValueError(f"{source}: fixed slice(s) {str(bad)[:80]} outside the image's {mask.shape[0]} slices")
    drawn = np.zeros((2, *mask.shape), bool)
    drawn[0, fixed_slices] = mask[fixed_slices]
    drawn[1, fixed_slices] = ~mask[fixed_slices]
    return drawn
