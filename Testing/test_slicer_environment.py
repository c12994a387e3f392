"""Where the module finds its interpreter and package, and how its runs are started: PythonSlicer on PATH as
Slicer's executePythonModule finds it (a build tree has no slicerHome/bin), the package shipped with the
extension first on PYTHONPATH (so an update takes effect and nothing is pip-built in the extension folder), and
no console window on Windows."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "DiffUMambaSeg"))

from DiffUMambaSegLib import environment, runner  # noqa: E402


def test_pythonslicer_is_found_on_path_first_then_beside_the_application(tmp_path):
    on_path = environment.python_executable("/opt/Slicer", which=lambda name: f"/build/bin/{name}")
    assert on_path == "/build/bin/PythonSlicer"
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "PythonSlicer").write_text("")
    assert environment.python_executable(str(tmp_path), which=lambda name: None) == str(tmp_path / "bin" / "PythonSlicer")
    with pytest.raises(FileNotFoundError, match="PythonSlicer was not found on PATH"):
        environment.python_executable(str(tmp_path / "nowhere"), which=lambda name: None)


def test_the_shipped_package_is_found_in_the_build_tree_layout_and_in_a_checkout(tmp_path):
    assert environment.package_dir(REPO / "DiffUMambaSeg") == REPO / "Training"       # source checkout
    module = tmp_path / "lib" / "Slicer-5.12" / "qt-scripted-modules"                    # build tree / install
    (module / "Resources" / "Training" / "diffumamba").mkdir(parents=True)
    (module / "Resources" / "Training" / "diffumamba" / "__init__.py").write_text("")
    (module / "Resources" / "Training" / "pyproject.toml").write_text("")
    assert environment.package_dir(module) == module / "Resources" / "Training"
    with pytest.raises(FileNotFoundError, match="reinstall the extension"):
        environment.package_dir(tmp_path / "empty")


def test_a_run_uses_the_shipped_package_even_over_an_installed_one(tmp_path):
    """A stale 'diffumamba' earlier on the path (as an old release pip-installed into Slicer's Python) is shadowed."""
    stale = tmp_path / "stale" / "diffumamba"
    stale.mkdir(parents=True)
    (stale / "__init__.py").write_text("__version__ = 'stale'\n")
    env = environment.subprocess_environment(REPO / "Training", {"PYTHONPATH": str(tmp_path / "stale"), "PATH": ""})
    assert env["PYTHONPATH"].split(":")[0] == str(REPO / "Training")
    code = "import diffumamba, pathlib; print(pathlib.Path(diffumamba.__file__).resolve())"
    found = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert found.stdout.strip() == str((REPO / "Training" / "diffumamba" / "__init__.py").resolve())


class FakeStartupInfo:
    """subprocess.STARTUPINFO's fields (the class exists only on Windows)."""

    def __init__(self):
        self.dwFlags, self.wShowWindow = 0, 1


def test_windows_runs_start_hidden_and_in_their_own_group():
    options = runner.process_options("win32", FakeStartupInfo)
    assert options["creationflags"] & 0x08000000          # CREATE_NO_WINDOW: no console for PythonSlicer.exe
    assert options["creationflags"] & 0x00000200          # CREATE_NEW_PROCESS_GROUP: taskkill /T reaches the tree
    assert options["startupinfo"].dwFlags & 1 and options["startupinfo"].wShowWindow == 0   # SW_HIDE, as Slicer's
    assert runner.process_options("linux") == {"start_new_session": True}
