"""Which structures (RTSTRUCT ROIs, SEG segments, Slicer segments) make the GTV: one rule for every reader.

``choose_names(names, requested)``:

* ``requested`` given: the names equal to it ignoring case; if none, the names it matches as a whole-name
  regular expression (case-insensitive);
* nothing requested: the only name when there is one, else every name matching ``GTV.*`` (case-insensitive;
  SlicerRT and planning systems name them GTV-1, GTVp, GTV_Mass...).

No match is a ``NoMatchingStructure`` (a ``ValueError``) listing the names that exist. The Slicer module
cannot import this package (it runs without torch) and keeps a copy of the rule in
``DiffUMambaSegLib/flows.gtv_segments``; Testing/test_dicom_conformance.py holds both to the same table.
"""

from __future__ import annotations

import re
from typing import Optional, Sequence

__all__ = ["DEFAULT_PATTERN", "NoMatchingStructure", "choose_names"]

DEFAULT_PATTERN = r"gtv.*"


class NoMatchingStructure(ValueError):
    """Nothing matched: ``pattern`` is what was looked for, ``names`` what exists."""

    def __init__(self, pattern: str, names: Sequence[str], requested: bool):
        self.pattern, self.names, self.requested = pattern, list(names), requested
        super().__init__(f"no structure matches {pattern!r}; there are: {', '.join(self.names) or 'none'}")


def choose_names(names: Sequence[str], requested: Optional[str] = None) -> list[int]:
    """Indices into ``names`` of the chosen structures, in their order (see the module's rule)."""
    names = [str(n) for n in names]
    if requested is None and len(names) == 1:
        return [0]
    pattern = DEFAULT_PATTERN if requested is None else requested
    exact = [i for i, n in enumerate(names) if n.casefold() == pattern.casefold()]
    if exact:
        return exact
    try:
        regex = re.compile(pattern, re.IGNORECASE)
    except re.error as err:
        raise ValueError(f"bad ROI pattern {pattern!r}: {err}") from None
    chosen = [i for i, n in enumerate(names) if regex.fullmatch(n)]
    if not chosen:
        raise NoMatchingStructure(pattern, names, requested is not None)
    return chosen
