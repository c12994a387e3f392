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


# A run's output is decoded as UTF-8 (runner.py, correction_worker.py). A child Python encodes piped stdio in its
# locale's code page unless told otherwise: cp1252 and the like on Windows (review W9). Linux stands in for that with
# a locale whose code page is not UTF-8: the C locale with PEP 538's coercion and PEP 540's UTF-8 mode switched off
# (what a C locale means to Python when it does not rescue it: ASCII stdio). The child prints a CJK path it was given.
NON_UTF8_LOCALE = {"LC_ALL": "C", "LANG": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"}
CJK_PATH = "/data/患者 Müller/2: 胸部 CT.nii.gz"


def _run_and_collect(env):
    code = ("import sys; print('stdout', sys.stdout.encoding, sys.stdin.encoding, flush=True); "
            "print('reading', sys.argv[1]); print('diffumamba predict: error: ' + sys.argv[1], file=sys.stderr); "
            "sys.exit(2)")
    lines = []
    run = runner.CommandRunner([sys.executable, "-c", code, CJK_PATH], on_log=lines.append, env=env)
    run.start()
    return run.wait(timeout=60), lines


def test_a_child_in_a_non_utf8_locale_reports_a_cjk_path_intact(tmp_path):
    """The log line and the extracted error line carry the path as it was given, and the child does not fail on
    printing it: its streams are UTF-8 (PYTHONUTF8, PYTHONIOENCODING) whatever the parent's locale."""
    base = {k: v for k, v in __import__("os").environ.items() if k not in ("PYTHONIOENCODING", "PYTHONUTF8")}
    base.update(NON_UTF8_LOCALE)
    probe = subprocess.run([sys.executable, "-c", "import sys; print(sys.stdout.encoding)"], env=base,
                           capture_output=True, text=True, check=True)
    assert probe.stdout.strip().lower() in ("ascii", "ansi_x3.4-1968")        # the emulation really is not UTF-8
    result, lines = _run_and_collect(environment.subprocess_environment(REPO / "Training", base))
    assert result.returncode == 2 and not result.cancelled                      # the script's own exit, not a crash
    assert result.error == CJK_PATH
    assert f"reading {CJK_PATH}" in lines
    assert "stdout utf-8 utf-8" in lines          # stdin too (the worker writes UTF-8); stderr may come first
    assert not any("UnicodeEncodeError" in line or "\ufffd" in line for line in lines)


def test_a_users_pythonioencoding_does_not_change_what_the_runner_decodes():
    """A PYTHONIOENCODING set for other programs (e.g. cp1252) would garble the UTF-8 decoding: it is overridden."""
    env = environment.subprocess_environment(REPO / "Training", {"PYTHONIOENCODING": "cp1252", "PATH": ""})
    assert env["PYTHONIOENCODING"] == "utf-8:backslashreplace" and env["PYTHONUTF8"] == "1"
