"""What the module needs in Slicer's Python, and installing it only after the user agreed.

Rules (Slicer's, and the reviews of other AI extensions): nothing is installed at import time; torch only
through the PyTorch extension's ``PyTorchUtils`` (it picks the CUDA or CPU wheel for the machine); never
replace what Slicer ships (SimpleITK, numpy, vtk); the project's own ``diffumamba`` package comes from the
extension (``Resources/diffumamba`` wheel or source) with its other dependencies. The Slicer calls are
injected (``Installer`` protocol) so this logic is tested without Slicer.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable, Optional, Protocol, Sequence

__all__ = ["Requirement", "REQUIREMENTS", "TORCH_MINIMUM", "missing", "Installer", "install_missing", "SLICER_SHIPPED",
           "unsupported_python"]

TORCH_MINIMUM = "2.1"
PYTHON_MINIMUM = (3, 10)      # the diffumamba package's requires-python
SLICER_SHIPPED = ("SimpleITK", "numpy", "vtk")     # never installed or upgraded from here


@dataclass(frozen=True)
class Requirement:
    name: str            # distribution name
    minimum: str = ""    # lowest acceptable version ("" for any)

    def spec(self) -> str:
        return f"{self.name}>={self.minimum}" if self.minimum else self.name


REQUIREMENTS = (Requirement("monai", "1.3"), Requirement("pydicom", "3.0"), Requirement("highdicom", "0.22"),
                Requirement("slicerio", "1.1"), Requirement("safetensors", "0.4"), Requirement("scipy", "1.10"),
                Requirement("scikit-image", "0.21"), Requirement("tqdm"))


def _version_tuple(version: str) -> tuple:
    parts = []
    for piece in version.split("+")[0].split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def missing(requirements: Sequence[Requirement], installed: Callable[[str], Optional[str]]) -> list[Requirement]:
    """Requirements not installed, or older than their minimum (``installed(name)`` -> version or None)."""
    result = []
    for requirement in requirements:
        if requirement.name in SLICER_SHIPPED:
            continue
        version = installed(requirement.name)
        if version is None or (requirement.minimum and _version_tuple(version) < _version_tuple(requirement.minimum)):
            result.append(requirement)
    return result


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


def install_missing(installer: Installer, diffumamba_source: str, torch_version: Optional[str],
                    installed: Callable[[str], Optional[str]] = installed_version) -> bool:
    """Ask once, listing everything; then torch (PyTorchUtils), the dependencies, and diffumamba without deps.

    Returns False when the user declined or torch could not be installed (nothing else is installed then).
    Raises RuntimeError on a Python the package does not support, before asking anything.
    """
    problem = unsupported_python(sys.version_info)
    if problem:
        raise RuntimeError(problem)
    needed = missing(REQUIREMENTS, installed)
    torch_needed = torch_version is None or _version_tuple(torch_version) < _version_tuple(TORCH_MINIMUM)
    package_needed = installed("diffumamba") is None
    if not (needed or torch_needed or package_needed):
        return True
    items = ([f"torch>={TORCH_MINIMUM} (through the PyTorch extension)"] if torch_needed else []) + \
        [r.spec() for r in needed] + (["diffumamba (shipped with this extension)"] if package_needed else [])
    if not installer.confirm("DiffUMambaSeg needs these Python packages, which will be installed into Slicer's "
                             "Python:\n\n" + "\n".join(items) + "\n\nInstall them now?"):
        return False
    if torch_needed and not installer.install_torch(TORCH_MINIMUM):
        return False
    if needed:
        installer.pip_install([r.spec() for r in needed])
    if package_needed:
        installer.pip_install(["--no-deps", diffumamba_source])
    return True
