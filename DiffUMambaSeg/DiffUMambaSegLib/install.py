"""What the module needs in Slicer's Python, and installing it only after the user agreed.

The list is ``Resources/requirements.txt`` (the 5.12 template's place for it): only what the module's runs import
(``diffumamba predict``, ``propagate``, ``export``, ``serve``), not the training extras of ``Training/pyproject.toml``
(tensorboard, matplotlib, tqdm), which would put grpcio, protobuf and the like into every clinician's Slicer. Three
kinds of entries, installed three ways:

- torch: through the PyTorch extension only (``PyTorchUtils`` picks the CUDA or CPU wheel for the machine);
- ``SLICER_BUNDLED``, what Slicer 5.12 ships (SimpleITK, numpy, vtk, its DICOM stack, scipy, pillow): never
  installed nor upgraded from here, not even as a dependency of another package (``skip_packages`` of
  ``slicer.packaging.pip_ensure``); one that is too old is reported ("use a newer Slicer") instead;
- the rest: Slicer's own ``slicer.packaging.pip_ensure`` (testing-mode skip, restart prompt after an upgrade of an
  imported package), after the one question this module asks.

The question says what the install costs (internet, several GB, minutes), as TotalSegmentator's does. A failed
install (no network, a proxy) names the network and the offline way: a wheelhouse and ``pip_install("--no-index
--find-links ...")`` (docs/slicer.md). The ``diffumamba`` package itself is never installed: runs put the shipped
copy on ``PYTHONPATH`` (``environment.py``). Nothing is installed at import time; the Slicer calls are injected
(``Installer``) so this logic is tested without Slicer.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Protocol, Sequence

__all__ = ["Requirement", "load_requirements", "runtime_requirements", "TORCH", "SLICER_BUNDLED",
           "missing", "Installer", "install_missing", "unsupported_python", "installed_version", "InstallError",
           "offline_hint", "CONFIRMATION"]

PYTHON_MINIMUM = (3, 10)      # the diffumamba package's requires-python
TORCH = "torch"               # through PyTorchUtils only
# Shipped with Slicer 5.12 (SuperBuild/External_python-dicom-requirements.cmake:45,94, External_python-scipy.cmake:44,
# numpy, SimpleITK and VTK built by the SuperBuild): never installed or upgraded from here.
SLICER_BUNDLED = ("SimpleITK", "numpy", "vtk", "pydicom", "highdicom", "scipy", "pillow")
_IMPORT_NAMES = {"pillow": "PIL"}        # a bundled package without pip metadata is asked by import
_SPEC = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:>=\s*([0-9][0-9A-Za-z.]*))?\s*$")

CONFIRMATION = ("DiffUMambaSeg needs these Python packages in Slicer's Python:\n\n{items}\n\n"
                "Installing them needs internet access (pypi.org{torch_site}) and downloads several GB "
                "(PyTorch with CUDA alone is over 2 GB); it can take 10 minutes or more, and Slicer may not respond "
                "meanwhile. Without internet, see 'Offline installation' in the DiffUMambaSeg documentation.\n\n"
                "Install them now?")


@dataclass(frozen=True)
class Requirement:
    name: str            # distribution name
    minimum: str = ""    # lowest acceptable version ("" for any)

    def spec(self) -> str:
        return f"{self.name}>={self.minimum}" if self.minimum else self.name


class InstallError(RuntimeError):
    """An install step failed; the message says why and what to do (network, offline wheelhouse)."""


def _dependency_strings(path: Path) -> List[str]:
    text = Path(path).read_text(encoding="utf-8")
    if Path(path).suffix != ".toml":             # requirements.txt: one per line, comments and pip options skipped
        lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
        return [line for line in lines if line and not line.startswith("-")]
    try:
        import tomllib
    except ImportError:          # Python 3.10: the one array we need, read by hand
        block = re.search(r"^dependencies\s*=\s*\[(.*?)^\]", text, re.MULTILINE | re.DOTALL)
        return re.findall(r'"([^"]+)"', re.sub(r"#[^\n]*", "", block.group(1))) if block else []
    return list(tomllib.loads(text).get("project", {}).get("dependencies", []))


def load_requirements(path: Path) -> List[Requirement]:
    """The entries of a ``requirements.txt`` (or of a ``pyproject.toml``'s ``[project] dependencies``): ``name`` or
    ``name>=version``; anything else is refused, so the check below never silently accepts a constraint it ignores."""
    requirements = []
    for dependency in _dependency_strings(path):
        match = _SPEC.match(dependency)
        if not match:
            raise ValueError(f"{path}: dependency {dependency!r} is not 'name' or 'name>=version'")
        requirements.append(Requirement(match.group(1), match.group(2) or ""))
    if not requirements:
        raise ValueError(f"{path}: no dependencies found")
    return requirements


def runtime_requirements(module_dir: Path) -> List[Requirement]:
    """The module's run-time requirements (``Resources/requirements.txt`` beside the module file)."""
    return load_requirements(Path(module_dir) / "Resources" / "requirements.txt")


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


def _bundled(name: str) -> bool:
    return name.lower() in {b.lower() for b in SLICER_BUNDLED}


def missing(requirements: Sequence[Requirement], installed: Callable[[str], Optional[str]]) -> List[Requirement]:
    """Requirements to pip-install (torch and Slicer's bundled packages excluded): absent, or older than asked."""
    return [r for r in requirements if not _bundled(r.name) and r.name != TORCH
            and _too_old(installed(r.name), r.minimum)]


def installed_version(name: str) -> Optional[str]:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        if not _bundled(name):
            return None
    try:                      # Slicer builds some of its packages without pip metadata: ask the module itself
        module = __import__(_IMPORT_NAMES.get(name.lower(), name))
    except ImportError:
        return None
    return str(getattr(module, "__version__", "") or "0")


def unsupported_python(version_info: Sequence[int]) -> Optional[str]:
    """Why this Slicer's Python cannot run the module (None when it can): Slicer releases before the move to
    Python 3.12 carry 3.9, which the package does not support; say so instead of failing inside pip."""
    if tuple(version_info[:2]) >= PYTHON_MINIMUM:
        return None
    found = ".".join(map(str, version_info[:3]))
    wanted = ".".join(map(str, PYTHON_MINIMUM))
    return (f"DiffUMambaSeg needs Python {wanted} or newer; this Slicer has Python {found}. "
            "Install Slicer 5.12 or newer (it ships Python 3.12).")


def _bundled_problem(requirements: Sequence[Requirement], installed: Callable[[str], Optional[str]]) -> Optional[str]:
    old = [(r, installed(r.name)) for r in requirements if _bundled(r.name) and _too_old(installed(r.name), r.minimum)]
    if not old:
        return None
    found = ", ".join(f"{r.spec()} (this Slicer has {version or 'none'})" for r, version in old)
    return (f"DiffUMambaSeg needs {found}. These come with Slicer and are not replaced by the module (that could break "
            "Slicer's own modules): install a newer Slicer release.")


def offline_hint(step: str, error: BaseException, packages: Sequence[str]) -> str:
    """The message of a failed install step: what failed, the network as the likely cause, and the offline way for
    ``packages`` (the names to install: the same command works from a wheelhouse without any network)."""
    status = getattr(error, "returncode", None)
    what = f"exit status {status}" if status is not None else str(error)
    names = " ".join(packages)
    return (f"Installing {step} failed ({what}). DiffUMambaSeg downloads its Python packages from the internet "
            "(pypi.org; PyTorch through light-the-torch from download.pytorch.org): check this computer's network "
            "connection and proxy settings, then try again. The pip output is in the Python console.\n\n"
            "Without internet access: on a computer with internet and the same operating system and Slicer version, "
            f"download the wheels into a folder (a wheelhouse): PythonSlicer -m pip download --dest <folder> {names}; "
            "copy the folder here, then run in Slicer's Python console: "
            f"slicer.util.pip_install(\"--no-index --find-links <folder> {names}\") "
            "(docs/slicer.md, 'Offline installation').")


class Installer(Protocol):
    def confirm(self, message: str) -> bool: ...

    def install_torch(self, minimum: str) -> bool: ...

    def pip_ensure(self, specs: Sequence[str], skip_packages: Sequence[str]) -> None: ...


def install_missing(installer: Installer, requirements: Sequence[Requirement],
                    installed: Callable[[str], Optional[str]] = installed_version) -> bool:
    """Ask once, listing everything; then torch (PyTorchUtils), then the others through ``pip_ensure``.

    Returns False when the user declined or torch could not be installed (nothing else is installed then).
    Raises RuntimeError on a Python the package does not support or a too old bundled package, before asking
    anything; ``InstallError`` (with the network and offline hint) when an install step fails.
    """
    problem = unsupported_python(sys.version_info) or _bundled_problem(requirements, installed)
    if problem:
        raise RuntimeError(problem)
    torch = next((r for r in requirements if r.name == TORCH), Requirement(TORCH))
    needed = missing(requirements, installed)
    torch_needed = _too_old(installed(TORCH), torch.minimum)
    if not (needed or torch_needed):
        return True
    items = ([f"{torch.spec()} (through the PyTorch extension)"] if torch_needed else []) + [r.spec() for r in needed]
    if not installer.confirm(CONFIRMATION.format(items="\n".join(items),
                                                 torch_site=", download.pytorch.org" if torch_needed else "")):
        return False
    names = [r.name for r in needed]
    if torch_needed:
        try:
            if not installer.install_torch(torch.minimum):
                return False
        except subprocess.CalledProcessError as error:
            raise InstallError(offline_hint("PyTorch", error, [TORCH, *names])) from error
    if needed:
        try:
            installer.pip_ensure([r.spec() for r in needed], [*SLICER_BUNDLED, TORCH])
        except subprocess.CalledProcessError as error:        # torch is in place by now
            raise InstallError(offline_hint(", ".join(names), error, names)) from error
    return True
