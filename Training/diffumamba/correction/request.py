"""A correction request as a user's tool states it: clicks in patient millimetres and the slices drawn by hand.

One JSON shape, read from a file by ``diffumamba correct --clicks`` and from a line by ``diffumamba serve``::

    {"coordinate_system": "LPS",
     "clicks": [{"point": [x, y, z], "label": "include"}, {"point": [x, y, z], "label": "exclude"}],
     "fixed_slices": [41, 42]}

``point`` is a position in mm: LPS (DICOM's and ITK's patient coordinates, the default) or RAS (Slicer's).
``fixed_slices`` are indices along the image's slice axis (k, from 0) where the given mask is exactly what the
user drew; the network redoes the rest of the volume to agree with them and never changes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .clicks import Click

__all__ = ["CorrectionRequest", "parse_request", "grid_clicks", "drawn_slices"]

LABELS = {"include": True, "positive": True, "exclude": False, "negative": False}


@dataclass
class CorrectionRequest:
    points: list[tuple[float, float, float]]          # LPS mm
    positive: list[bool]
    fixed_slices: list[int] = field(default_factory=list)


def parse_request(value, source: str) -> CorrectionRequest:
    """The request in ``value`` (a decoded JSON object); ValueError naming ``source`` and the bad entry."""
    if not isinstance(value, dict):
        raise ValueError(f"{source}: expected a JSON object with 'clicks' (see docs/correction.md)")
    system = str(value.get("coordinate_system", "LPS")).upper()
    if system not in ("LPS", "RAS"):
        raise ValueError(f"{source}: coordinate_system must be LPS or RAS, not {system!r}")
    clicks = value.get("clicks", [])
    if not isinstance(clicks, list):
        raise ValueError(f"{source}: 'clicks' must be a list of {{'point': [x, y, z], 'label': 'include'|'exclude'}}")
    points, positive = [], []
    for number, click in enumerate(clicks, start=1):
        point = click.get("point") if isinstance(click, dict) else None
        label = str(click.get("label", "")).lower() if isinstance(click, dict) else ""
        if (not isinstance(point, list) or len(point) != 3
                or not all(isinstance(v, (int, float)) and np.isfinite(v) for v in point)):
            raise ValueError(f"{source}: click {number} needs 'point': three finite numbers (mm)")
        if label not in LABELS:
            raise ValueError(f"{source}: click {number} needs 'label': 'include' or 'exclude', not {label!r}")
        x, y, z = (float(v) for v in point)
        points.append((-x, -y, z) if system == "RAS" else (x, y, z))
        positive.append(LABELS[label])
    fixed = value.get("fixed_slices", [])
    if not isinstance(fixed, list) or not all(isinstance(k, int) and not isinstance(k, bool) for k in fixed):
        raise ValueError(f"{source}: 'fixed_slices' must be a list of slice indices (integers)")
    return CorrectionRequest(points, positive, sorted(set(fixed)))


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
        raise ValueError(f"{source}: fixed slice(s) {bad} outside the image's {mask.shape[0]} slices")
    drawn = np.zeros((2, *mask.shape), bool)
    drawn[0, fixed_slices] = mask[fixed_slices]
    drawn[1, fixed_slices] = ~mask[fixed_slices]
    return drawn
