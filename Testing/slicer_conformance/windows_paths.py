"""Windows' file naming rules, checked on any OS: a module tested on Linux must still write names Windows accepts.

Rules from Microsoft's "Naming Files, Paths, and Namespaces" (learn.microsoft.com/windows/win32/fileio/naming-a-file):
no ``< > : " / \\ | ? *`` and no characters 0-31 in a name; no name ending in a space or a period; none of the
reserved device names CON, PRN, AUX, NUL, COM0-9, LPT0-9 (also with superscript digits 1-3), alone or followed by an
extension; a component of at most 255 characters. A ``:`` in a name is worse than an error: NTFS reads
``2: CT.nrrd`` as the alternate data stream `` CT.nrrd`` of a file ``2``, and the write "succeeds".

Written independently of the module's own rule (``DiffUMambaSegLib/file_names.py``) so that the two check each
other. ``SlicerSession.require_windows_names(folder)`` makes a test fail at the session's end when any file or
folder below ``folder`` breaks a rule.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["name_problem", "tree_problems"]

_FORBIDDEN = set('<>:"/\\|?*') | {chr(c) for c in range(32)}
_DEVICES = {"CON", "PRN", "AUX", "NUL"} | {f"{d}{n}" for d in ("COM", "LPT") for n in "0123456789¹²³"}


def name_problem(name: str) -> str:
    """"" when Windows accepts ``name`` as one path component, else why not."""
    if name in ("", ".", ".."):
        return "not a file name"
    bad = sorted({c for c in name if c in _FORBIDDEN})
    if bad:
        return "forbidden character(s) " + " ".join(repr(c) for c in bad)
    if name.endswith((" ", ".")):
        return "ends with a space or a period"
    if name.split(".", 1)[0].rstrip(" ").upper() in _DEVICES:
        return "reserved device name"
    if len(name) > 255:
        return "longer than 255 characters"
    return ""


def tree_problems(folder) -> list[str]:
    """``"<path>: <problem>"`` for every file and folder below ``folder`` that Windows would refuse."""
    root = Path(folder)
    if not root.exists():
        return []
    found = []
    for path in sorted(root.rglob("*")):
        problem = name_problem(path.name)
        if problem:
            found.append(f"{path}: {problem}")
    return found
