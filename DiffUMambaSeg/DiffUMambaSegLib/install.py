"""What the module needs in Slicer's Python, and installing it only after the user agreed.

One source of truth: the requirements are the ``[project] dependencies`` of the shipped package's own
``pyproject.toml`` (what ``pip install ./Training`` would install), less what must not be pip-installed
here: torch comes only through the PyTorch extension's ``PyTorchUtils`` (it picks the CUDA or CPU wheel for
the machine), and Slicer's own SimpleITK, numpy and vtk are never replaced. The ``diffumamba`` package itself
is not installed at all: runs put the shipped copy on ``PYTHONPATH`` (``environment.py``), so an extension
update updates it. Nothing is installed at import time. The Slicer calls are injected (``Installer``
protocol) so this logic is tested without Slicer.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Protocol, Sequence

__all__ = ["Requirement", "load_requirements", "TORCH", "missing", "Installer", "install_missing", "SLICER_SHIPPED",
           "unsupported_python", "installed_version"]

PYTHON_MINIMUM = (3, 10)      # the diffumamba package's requires-python
SLICER_SHIPPED = ("SimpleITK", "numpy", "vtk")     # never installed or upgraded from here
TORCH = "torch"                                    # through PyTorchUtils only
_SPEC = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:>=\s*([0-9][0-9A-Za-z.]*))?\s*$")


@dataclass(frozen=True)
class Requirement:
    name: str            # distribution name
    minimum: str = ""    # lowest acceptable version ("" for any)

    def spec(self) -> str:
        return f"{self.name}>={self.minimum}" if self.minimum else self.name


def _dependency_strings(pyproject: Path) -> list[str]:
    text = Path(pyproject).read_text(encoding="utf-8")
    try:
        import tomllib
    except ImportError:          # Python 3.10: the one array we need, read by hand
        block = re.search(r"^dependencies\s*=\s*\[(.*?)^\]", text, re.MULTILINE | re.DOTALL)
        return re.findall(r'"([^"]+)"', re.sub(r"#[^\n]*", "", block.group(1))) if block else []
    return list(tomllib.loads(text).get("project", {}).get("dependencies", []))


def load_requirements(pyproject: Path) -> list[Requirement]:
    """Every ``[project] dependencies`` entry of ``pyproject`` (``name`` or ``name>=version``; anything else is
    refused, so the check below can never silently accept an unsupported constraint)."""
    requirements = []
    for dependency in _dependency_strings(pyproject):
        match = _SPEC.match(dependency)
        if not match:
            raise ValueError(f"{pyproject}: dependency {dependency!r} is not 'name' or 'name>=version'")
        requirements.append(Requirement(match.group(1), match.group(2) or ""))
    if not requirements:
        raise ValueError(f"{pyproject}: no [project] dependencies found")
    return requirements


def _version_tuple(version: str) -> tuple:
    parts = []
    for piece in version.split("+")[0].split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def _too_old(version: Optional[str], minimum: str) -> bool:
    return version is None or bool(minimum) and _version_tuple(version) < _version_tuple(minimum)


def missing(requirements: Sequence[Requirement], installed: Callable[[str], Optional[str]]) -> list[Requirement]:
    """Requirements (torch and Slicer's own packages excluded) not installed, or older than their minimum."""
    return [r for r in requirements if r.name not in SLICER_SHIPPED and r.name != TORCH
            and _too_old(installed(r.name), r.minimum)]


def installed_version(name: str) -> Optional[str]:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def unsupported_python(version_info: Sequence[int]) -> Optional[str]:
    """Why this Slicer's Python cannot run the module (None when it can): Slicer releases before the move to
    Python 3.12 carry 3.9, which the package does not support; say so instead of failing inside pip."""
    if tuple(version_info[:2]) >= PYTHON_MINIMUM:
        return None
    found = ".".join(map(str, version_info[:3]))
    wanted = ".".join(map(str, PYTHON_MINIMUM))
    return (f"DiffUMambaSeg needs Python {wanted} or newer; this Slicer has Python {found}. "
            "Install Slicer 5.12 or newer (it ships Python 3.12).")


class Installer(Protocol):
    def confirm(self, message: str) -> bool: ...

    def install_torch(self, minimum: str) -> bool: ...

    def pip_install(self, specs: Sequence[str]) -> None: ...


def install_missing(installer: Installer, requirements: Sequence[Requirement],
                    installed: Callable[[str], Optional[str]] = installed_version) -> bool:
    """Ask once, listing everything; then torch (PyTorchUtils), then the other dependencies in one pip call.

    Returns False when the user declined or torch could not be installed (nothing else is installed then).
    Raises RuntimeError on a Python the package does not support, before asking anything.
    """
    problem = unsupported_python(sys.version_info)
    if problem:
        raise RuntimeError(problem)
    torch = next((r for r in requirements if r.name == TORCH), Requirement(TORCH))
    needed = missing(requirements, installed)
    torch_needed = _too_old(installed(TORCH), torch.minimum)
    if not (needed or torch_needed):
        return True
    items = ([f"{torch.spec()} (through the PyTorch extension)"] if torch_needed else []) + [r.spec() for r in needed]
    if not installer.confirm("DiffUMambaSeg needs these Python packages, which will be installed into Slicer's "
                             "Python:\n\n" + "\n".join(items) + "\n\nInstall them now?"):
        return False
    if torch_needed and not installer.install_torch(torch.minimum):
        return False
    if needed:
        installer.pip_install([r.spec() for r in needed])
    return True
