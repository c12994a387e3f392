"""Where the module finds the Python it runs and the ``diffumamba`` package it runs.

The command line runs from the package *shipped with this extension* (``Resources/Training`` in a build tree or
an installed extension, ``Training/`` in a source checkout), put first on ``PYTHONPATH`` of the subprocess: an
extension update therefore updates the command line at once, nothing is pip-built inside the extension folder,
and a stale ``diffumamba`` left in Slicer's site-packages by an older release is shadowed. The interpreter is
found as Slicer's own ``slicer.util.executePythonModule`` finds it: ``PythonSlicer`` on ``PATH`` (the launcher
puts it there in installed and build trees alike), then beside the application.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable, Mapping, Optional

__all__ = ["PACKAGE_MARKER", "UTF8_STDIO", "package_dir", "python_executable", "subprocess_environment"]

PACKAGE_MARKER = Path("diffumamba") / "__init__.py"


def package_dir(module_dir: Path) -> Path:
    """The folder holding the shipped ``diffumamba`` package (the one to put on PYTHONPATH)."""
    module_dir = Path(module_dir)
    candidates = (module_dir / "Resources" / "Training", module_dir.parent / "Training")
    for candidate in candidates:
        if (candidate / PACKAGE_MARKER).is_file() and (candidate / "pyproject.toml").is_file():
            return candidate
    raise FileNotFoundError("The diffumamba package is missing from this extension (looked in "
                            + ", ".join(str(c) for c in candidates) + "): reinstall the extension.")


def python_executable(slicer_home: Optional[str], which: Callable[[str], Optional[str]] = shutil.which,
                      is_file: Callable[[Path], bool] = Path.is_file, windows: bool = os.name == "nt") -> str:
    """PythonSlicer: Slicer's Python as a plain interpreter (on PATH first, as ``executePythonModule`` does)."""
    name = "PythonSlicer.exe" if windows else "PythonSlicer"
    found = which("PythonSlicer")
    if found:
        return found
    tried = []
    for folder in ([Path(slicer_home) / "bin", Path(slicer_home)] if slicer_home else []):
        tried.append(folder / name)
        if is_file(folder / name):
            return str(folder / name)
    raise FileNotFoundError("PythonSlicer was not found on PATH" + (f" nor at {', '.join(map(str, tried))}" if tried
                                                                      else "") + ": start Slicer with its launcher.")


# The child's text streams in UTF-8, whatever the locale: the runner and the correction worker decode (and write
# the worker's stdin) as UTF-8, but Python encodes piped stdio in the locale's code page (cp1252 and the like on
# Windows, ASCII under a C locale) unless told otherwise, so a CJK or accented user folder, patient name or series
# description in a path would come out garbled, or fail the CLI with UnicodeEncodeError. PYTHONUTF8=1 also decodes
# the child's argv as UTF-8; backslashreplace keeps any undecodable byte of a path from failing the run.
# Forced, not defaulted: a PYTHONIOENCODING=cp1252 set for other programs would break the decoding the same way.
UTF8_STDIO = {"PYTHONUTF8": "1", "PYTHONIOENCODING": "utf-8:backslashreplace"}


def subprocess_environment(package: Path, base: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """The environment of a run: ``base`` (the current one) with the shipped package first on PYTHONPATH,
    unbuffered output, and UTF-8 standard streams (``UTF8_STDIO``)."""
    environment = dict(os.environ if base is None else base)
    rest = environment.get("PYTHONPATH", "")
    environment["PYTHONPATH"] = str(package) + (os.pathsep + rest if rest else "")
    environment.setdefault("PYTHONUNBUFFERED", "1")
    environment.update(UTF8_STDIO)
    return environment
