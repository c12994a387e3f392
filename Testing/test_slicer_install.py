"""What the module installs into Slicer's Python, and how (review W7).

- The list: ``DiffUMambaSeg/Resources/requirements.txt``, the run-time subset of ``Training/pyproject.toml`` (same
  minimums, training extras left out), and enough: the commands the Slicer flows run (predict, propagate, export,
  serve) succeed with every other installed package hidden.
- The install: one question (internet, several GB), torch through PyTorchUtils with a progress dialog, the rest
  through Slicer 5.12's real ``slicer.packaging.pip_ensure`` with Slicer's bundled packages and torch skipped;
  offline, a message naming the network and the wheelhouse way. These run the module's ``ensureDependencies`` in
  the conformance harness on the real ``slicer.packaging`` and ``slicer.util.executePythonModule``; only pip is
  stubbed, at the subprocess boundary (a fake ``PythonSlicer`` on PATH that "installs" by writing dist-info into a
  fake site-packages, which is all ``importlib.metadata`` sees during the test, as in a fresh Slicer).
"""

import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODULE = REPO / "DiffUMambaSeg"
sys.path.insert(0, str(MODULE))

from DiffUMambaSegLib import install  # noqa: E402
from DiffUMambaSegLib.install import Requirement, install_missing, load_requirements, missing  # noqa: E402

PYPROJECT = REPO / "Training" / "pyproject.toml"
REQUIREMENTS = MODULE / "Resources" / "requirements.txt"
TRAINING_ONLY = {"tensorboard", "matplotlib", "tqdm"}


class FakeInstaller:
    def __init__(self, answer=True, torch_ok=True, fail=None):
        self.answer, self.torch_ok, self.fail = answer, torch_ok, fail
        self.asked, self.torch, self.pip = [], [], []

    def confirm(self, message):
        self.asked.append(message)
        return self.answer

    def install_torch(self, minimum):
        self.torch.append(minimum)
        if self.fail == "torch":
            raise subprocess.CalledProcessError(1, "pip install")
        return self.torch_ok

    def pip_ensure(self, specs, skip_packages):
        self.pip.append((list(specs), list(skip_packages)))
        if self.fail == "pip":
            raise subprocess.CalledProcessError(1, "pip install")


# --- the list ---------------------------------------------------------------------------------------------------
def test_the_runtime_list_is_the_pyproject_less_the_training_extras():
    """One source of truth for the minimums: every run-time entry is a pyproject dependency with the same minimum,
    and what pyproject has beyond them is exactly the training extras."""
    declared = {r.name: r.minimum for r in load_requirements(PYPROJECT)}
    runtime = {r.name: r.minimum for r in install.runtime_requirements(MODULE)}
    assert runtime == {name: declared[name] for name in runtime}
    assert set(declared) - set(runtime) == TRAINING_ONLY
    assert "torch" in runtime and "monai" in runtime


def test_the_module_level_imports_of_the_command_line_are_runtime_requirements():
    """Every third-party module imported when ``python -m diffumamba`` starts (module level, transitively from
    __main__, which imports every command) is torch or numpy, both run-time requirements: no training package is
    needed just to start the command line."""
    import ast

    root = REPO / "Training"

    def path_of(name):
        path = root.joinpath(*name.split("."))
        return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")

    seen, third_party, todo = set(), set(), ["diffumamba.__main__"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = path_of(name)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.parse(path.read_text()).body:       # module level only (lazy imports: the runs below)
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]) if node.level else ""
                module = ".".join(p for p in (base, node.module or "") if p)
                targets = [module] + [f"{module}.{a.name}" for a in node.names]
            for target in targets:
                if target.split(".")[0] == "diffumamba":
                    if path_of(target).is_file():
                        todo.append(target)
                elif target.split(".")[0] not in sys.stdlib_module_names:
                    third_party.add(target.split(".")[0])
    assert {"diffumamba.commands.train", "diffumamba.commands.predict"} <= seen
    assert third_party == {"torch", "numpy"}


# --- the runs: only the run-time packages importable -------------------------------------------------------------
BLOCKER = '''
import importlib.abc, json, os, sys
_BLOCKED = set(json.loads(os.environ["DIFFUMAMBA_TEST_HIDDEN"]))
class _Hidden(importlib.abc.MetaPathFinder):
    """Installed, but not a run-time requirement (nor needed by one): not there, as in a clinician's Slicer."""
    def find_spec(self, name, path=None, target=None):
        if path is None and name.partition(".")[0] in _BLOCKED:
            with open(os.environ["DIFFUMAMBA_TEST_HIDDEN_LOG"], "a", encoding="utf-8") as log:
                log.write(name + "\\n")
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _Hidden())
'''


def hidden_modules():
    """Top-level modules of every installed distribution outside the run-time requirements' dependency closure."""
    from packaging.requirements import Requirement as PipRequirement
    from packaging.utils import canonicalize_name

    closure, todo = set(), [r.name for r in install.runtime_requirements(MODULE)]
    while todo:
        name = canonicalize_name(todo.pop())
        if name in closure:
            continue
        closure.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        todo += [r.name for r in map(PipRequirement, requires) if r.marker is None or r.marker.evaluate({"extra": ""})]
    owners = importlib.metadata.packages_distributions()
    return sorted(top for top, dists in owners.items() if top != "diffumamba" and top not in sys.stdlib_module_names
                  and not any(canonicalize_name(d) in closure for d in dists)), closure


@pytest.fixture(scope="module")
def runtime_only(tmp_path_factory):
    """A run environment as the module builds it, plus a sitecustomize that hides every non-run-time package."""
    from DiffUMambaSegLib import environment

    folder = tmp_path_factory.mktemp("runtime_only")
    (folder / "sitecustomize.py").write_text(BLOCKER)
    hidden, closure = hidden_modules()
    assert {"tqdm", "matplotlib", "tensorboard", "pytest"} <= set(hidden)
    assert not ({"tensorboard", "matplotlib", "tqdm", "grpcio", "protobuf"} & closure)
    env = environment.subprocess_environment(REPO / "Training")
    env["PYTHONPATH"] = str(folder) + os.pathsep + env["PYTHONPATH"]
    env.update(DIFFUMAMBA_TEST_HIDDEN=json.dumps(hidden), DIFFUMAMBA_TEST_HIDDEN_LOG=str(folder / "hidden.log"))
    return env


def _run(env, command, **kwargs):
    from DiffUMambaSegLib import flows

    return subprocess.run([*flows.diffumamba_command(), *command], env=env, capture_output=True, text=True,
                          timeout=600, **kwargs)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    from conftest import write_phantoms

    return write_phantoms(tmp_path_factory.mktemp("phantom") / "Dataset900_Phantom")


def test_segment_and_propagate_run_with_only_the_runtime_packages(runtime_only, phantom, tmp_path):
    """The module's predict and propagate command lines (flows.py: --progress json) on the shipped preview model;
    the control (--progress bar, which needs tqdm) fails, so the hiding is real."""
    image, label = phantom / "imagesTr" / "c0_0000.nii.gz", phantom / "labelsTr" / "c0.nii.gz"
    model = MODULE / "Resources" / "Models" / "gtv-lung-preview-0.2.0.zip"
    predicted = _run(runtime_only, ["predict", str(image), "--model", str(model), "--out", str(tmp_path / "p"),
                                    "--device", "cpu", "--progress", "json"])
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    assert (tmp_path / "p" / "c0.nii.gz").is_file()
    propagated = _run(runtime_only, ["propagate", "--prior", str(image), "--prior-gtv", str(label), "--current",
                                     str(image), "--out", str(tmp_path / "r"), "--device", "cpu", "--progress", "json"])
    assert propagated.returncode == 0, propagated.stderr[-2000:]
    assert (tmp_path / "r" / "c0.nii.gz").is_file()
    control = _run(runtime_only, ["predict", str(image), "--model", str(model), "--out", str(tmp_path / "c"),
                                  "--device", "cpu", "--progress", "bar"])
    assert control.returncode != 0 and "No module named 'tqdm'" in control.stderr


def test_the_correction_worker_runs_with_only_the_runtime_packages(runtime_only, phantom, tmp_path):
    """``serve --stdio`` with the shipped click model answers a correct request (the module's correction path)."""
    from DiffUMambaSegLib import flows

    from conftest import tumour_point

    point, _ = tumour_point(phantom)
    request = {"id": 1, "command": "correct", "image": str(phantom / "imagesTr" / "c0_0000.nii.gz"), "mask": None,
               "output": str(tmp_path / "corrected.nii.gz"), "clicks": [{"point": point, "label": "include"}]}
    command = flows.serve_command(MODULE / "Resources" / "Models" / "click-lesion-0.1.0.zip", "cpu")
    done = subprocess.run(command, env=runtime_only, capture_output=True, text=True, timeout=600,
                          input=json.dumps(request) + "\n" + json.dumps({"command": "quit"}) + "\n")
    replies = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert replies and replies[0].get("ready") is True, done.stderr[-2000:]
    assert replies[1].get("ok") is True, replies[1:]
    assert (tmp_path / "corrected.nii.gz").is_file()


def test_dicom_export_runs_with_only_the_runtime_packages(runtime_only, shared_data, tmp_path):
    """``export`` to RTSTRUCT and DICOM SEG (highdicom, pydicom, scikit-image) on a real CT series."""
    folder = shared_data / "sts_sarcoma_ibsi" / "STS_019"
    done = _run(runtime_only, ["export", str(folder / "nifti" / "CT_mask.nii.gz"), "--reference",
                               str(folder / "ct_dicom" / "image"), "--out", str(tmp_path / "out"), "--names", "GTV",
                               "--format", "rtstruct", "dicom-seg", "--name", "STS_019"])
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "out" / "STS_019_rtstruct.dcm").is_file() and (tmp_path / "out" / "STS_019_seg.dcm").is_file()


# --- the install logic (fake installer) -------------------------------------------------------------------------
def test_missing_compares_versions_and_skips_torch_and_what_slicer_bundles():
    versions = {"monai": "1.2.0", "pydicom": "3.0.1", "numpy": None, "SimpleITK": None, "torch": None, "pillow": None}
    found = missing([Requirement("monai", "1.3"), Requirement("pydicom", "3.0"), Requirement("numpy", "2"),
                     Requirement("SimpleITK"), Requirement("pillow"), Requirement("slicerio"),
                     Requirement("torch", "2.1")], versions.get)
    assert [r.name for r in found] == ["monai", "slicerio"]
    assert missing([Requirement("monai", "1.3")], {"monai": "1.10.0"}.get) == []     # 1.10 > 1.3, not a string compare


def test_one_question_then_torch_then_pip_ensure_with_the_bundled_packages_skipped():
    installer = FakeInstaller()
    requirements = install.runtime_requirements(MODULE)
    assert install_missing(installer, requirements, installed=lambda name: "99" if name in install.SLICER_BUNDLED
                           else None)
    assert len(installer.asked) == 1 and "torch>=2.1 (through the PyTorch extension)" in installer.asked[0]
    assert "internet" in installer.asked[0] and "several GB" in installer.asked[0]
    assert installer.torch == ["2.1"]
    specs, skipped = installer.pip[0]
    assert specs == ["monai>=1.3", "scikit-image>=0.21", "slicerio>=1.1", "safetensors>=0.4"]
    assert set(skipped) == {*install.SLICER_BUNDLED, "torch"}
    assert {"SimpleITK", "numpy", "vtk", "pydicom", "highdicom", "scipy", "pillow"} <= set(skipped)


def test_nothing_happens_when_declined_or_complete():
    requirements = install.runtime_requirements(MODULE)
    declined = FakeInstaller(answer=False)
    assert not install_missing(declined, requirements, installed=lambda name: "99" if name != "torch" else None)
    assert declined.torch == [] and declined.pip == []
    complete = FakeInstaller()
    assert install_missing(complete, requirements, installed=lambda name: "99")
    assert complete.asked == [] and complete.pip == []
    old_torch = FakeInstaller()
    assert install_missing(old_torch, requirements, installed=lambda name: "2.0" if name == "torch" else "99")
    assert old_torch.torch == ["2.1"] and old_torch.pip == []


def test_no_dependency_is_installed_when_torch_fails():
    installer = FakeInstaller(torch_ok=False)
    assert not install_missing(installer, install.runtime_requirements(MODULE),
                               installed=lambda name: "99" if name in install.SLICER_BUNDLED else None)
    assert installer.pip == []


def test_a_too_old_bundled_package_is_reported_not_upgraded():
    installer = FakeInstaller()
    with pytest.raises(RuntimeError, match=r"pydicom>=3\.0 \(this Slicer has 2\.4\.4\).*newer Slicer"):
        install_missing(installer, install.runtime_requirements(MODULE),
                        installed=lambda name: "2.4.4" if name == "pydicom" else None)
    assert installer.asked == [] and installer.torch == [] and installer.pip == []


@pytest.mark.parametrize("step", ["torch", "pip"])
def test_a_failed_install_names_the_network_and_the_offline_way(step):
    installer = FakeInstaller(fail=step)
    with pytest.raises(install.InstallError) as raised:
        install_missing(installer, install.runtime_requirements(MODULE),
                        installed=lambda name: "99" if name in install.SLICER_BUNDLED else None)
    message = str(raised.value)
    assert "exit status 1" in message and "network" in message and "proxy" in message
    assert "--no-index --find-links" in message and "Offline installation" in message


def test_an_unsupported_constraint_is_refused_not_ignored(tmp_path):
    (tmp_path / "requirements.txt").write_text("monai>=1.3\nnumpy<2\n")
    with pytest.raises(ValueError, match="numpy<2"):
        load_requirements(tmp_path / "requirements.txt")


def test_an_old_python_is_refused_with_the_reason_before_anything_is_asked(monkeypatch):
    assert install.unsupported_python((3, 12, 10)) is None
    message = install.unsupported_python((3, 9, 10))
    assert "3.9.10" in message and "Slicer 5.12" in message
    monkeypatch.setattr(install.sys, "version_info", (3, 9, 10, "final", 0))
    installer = FakeInstaller()
    with pytest.raises(RuntimeError, match="Python 3.10 or newer"):
        install_missing(installer, install.runtime_requirements(MODULE), installed=lambda name: None)
    assert installer.asked == [] and installer.pip == [] and installer.torch == []


def test_python_3_10_reads_the_pyproject_without_tomllib(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tomllib(name, *args, **kwargs):
        if name == "tomllib":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    expected = load_requirements(PYPROJECT)
    monkeypatch.setattr(builtins, "__import__", no_tomllib)
    assert load_requirements(PYPROJECT) == expected


# --- in the harness: the real slicer.packaging, pip stubbed at the subprocess boundary ----------------------------
# Slicer 5.12.3's bundled packages with pip metadata (review W7: External_python-dicom-requirements.cmake:45,94,
# External_python-scipy.cmake:44); vtk and SimpleITK are left without metadata (install.installed_version then
# imports them), packaging is what slicer.packaging itself imports.
SLICER_SITE = {"numpy": "2.4.6", "scipy": "1.17.1", "pydicom": "3.0.2", "highdicom": "0.27.0", "pillow": "12.2.0",
               "packaging": "26.0"}

FAKE_PYTHONSLICER = '''#!{python}
"""PythonSlicer as slicer.util.executePythonModule starts it (-m pip ... / -m light_the_torch ...): logs its
arguments; online it "installs" each requirement by writing its dist-info (Requires-Dist from this machine's real
metadata) into the fake site; offline it prints what pip prints without a network and exits 1, unless told
--no-index --find-links FOLDER, where it installs only what has a wheel in FOLDER (as pip does)."""
import importlib.metadata, json, os, re, sys
from pathlib import Path

site, arguments = Path(os.environ["FAKE_SLICER_SITE"]), sys.argv[1:]
with open(os.environ["FAKE_PIP_LOG"], "a", encoding="utf-8") as log:
    log.write(json.dumps(arguments) + "\\n")
module, rest = arguments[1], arguments[3:]
specs, skip, wheelhouse = [], False, None
for index, argument in enumerate(rest):
    if skip or argument in ("-c", "--find-links"):
        skip = not skip
        continue
    if not argument.startswith("-"):
        specs.append(argument)
if "--no-index" in rest:
    wheelhouse = Path(rest[rest.index("--find-links") + 1])
    for spec in specs:
        wheel = re.split(r"[<>=!~;\\[ ]", spec)[0].replace("-", "_").lower()
        if not any(p.name.lower().startswith(wheel + "-") for p in wheelhouse.glob("*.whl")):
            print(f"ERROR: Could not find a version that satisfies the requirement {{spec}} (from versions: none)")
            sys.exit(1)
elif os.environ.get("FAKE_PIP_OFFLINE") == "1":
    print("WARNING: Retrying (Retry(total=4, connect=None, read=None, redirect=None, status=None)) after connection "
          "broken by 'NewConnectionError(<pip._vendor.urllib3.connection.HTTPSConnection object at 0x7f>: Failed to "
          f"establish a new connection: [Errno 101] Network is unreachable)': /simple/{{specs[0]}}/", flush=True)
    print(f"ERROR: Could not find a version that satisfies the requirement {{specs[0]}} (from versions: none)")
    print(f"ERROR: No matching distribution found for {{specs[0]}}")
    sys.exit(1)
for spec in specs:
    name = re.split(r"[<>=!~;\\[ ]", spec)[0]
    try:
        version, requires = importlib.metadata.version(name), importlib.metadata.requires(name) or []
    except importlib.metadata.PackageNotFoundError:
        version, requires = "0.7.5", []
    info = site / f"{{name.replace('-', '_')}}-{{version}}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\\nName: " + name + "\\nVersion: " + version + "\\n"
                                   + "".join(f"Requires-Dist: {{r}}\\n" for r in requires), encoding="utf-8")
    (info / "RECORD").write_text(f"{{info.name}}/METADATA,,\\n{{info.name}}/RECORD,,\\n", encoding="utf-8")
    print(f"Successfully installed {{name}}-{{version}}")
'''


def _dist_info(site, name, version):
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "RECORD").write_text(f"{info.name}/METADATA,,\n")


def pytorchutils_standin(slicer, calls, dialogs):
    """``PyTorchUtils`` of the SlicerPyTorch extension, reduced to what ``installTorch`` does (SlicerPyTorch
    PyTorchUtils/PyTorchUtils.py ``installTorch``/``_installLightTheTorch``): pip-install light-the-torch when it
    is missing, run ``light_the_torch install torch<requirement> torchvision`` through the blocking
    ``slicer.util._executePythonModule``, then import torch. Each call is recorded with whether the module's
    progress dialogs were visible meanwhile."""
    module = types.ModuleType("PyTorchUtils")

    class PyTorchUtilsLogic:
        def installTorch(self, askConfirmation=False, forceComputationBackend=None, torchVersionRequirement=None):
            calls.append(("installTorch", askConfirmation, torchVersionRequirement,
                          tuple(dialog.visible for _, dialog in dialogs)))
            args = ["install", "torch" + (torchVersionRequirement or ""), "torchvision"]
            try:
                importlib.metadata.version("light-the-torch")
            except importlib.metadata.PackageNotFoundError:
                slicer.util.pip_install("light-the-torch>=0.5")
            slicer.util._executePythonModule("light_the_torch", args)
            import torch
            return torch

    module.PyTorchUtilsLogic = PyTorchUtilsLogic
    return module


class _QThreadStatics:
    """QThread's static ``msleep`` (Qt 5 qthread.h), which ``packaging._pip_install_with_dialog`` calls."""

    @staticmethod
    def msleep(milliseconds):
        import time

        time.sleep(milliseconds / 1000)


class _ProgressDialogRecord:
    """``packaging._PipProgressDialog`` (a QDialog the harness's Qt stand-ins cannot build): keeps pip's log."""

    shown = []

    def __init__(self, requester=None, parent=None):
        self.requester, self.lines, self.visible = requester, [], False
        _ProgressDialogRecord.shown.append(self)

    def show(self):
        self.visible = True

    def close(self):
        self.visible = False

    def appendLog(self, line):
        self.lines.append(line)

    def getFullLog(self):
        return "\n".join(self.lines)


@pytest.fixture
def fresh_slicer(tmp_path, monkeypatch, request):
    """A conformance session whose Python looks like a fresh Slicer 5.12.3 to importlib.metadata, with the fake
    PythonSlicer first on PATH; yields (session, logic, pip log reader, site, recorded progress dialogs)."""
    pytest.importorskip("slicer_core", reason="slicer-core (installed by scripts/install.sh) is needed")
    from slicer_conformance import SlicerSession

    site, bin_dir, log = tmp_path / "site-packages", tmp_path / "bin", tmp_path / "pip.log"
    site.mkdir()
    for name, version in SLICER_SITE.items():
        _dist_info(site, name, version)
    bin_dir.mkdir()
    (bin_dir / "PythonSlicer").write_text(FAKE_PYTHONSLICER.format(python=sys.executable))
    (bin_dir / "PythonSlicer").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir) + os.pathsep + os.environ["PATH"])
    monkeypatch.setenv("FAKE_SLICER_SITE", str(site))
    monkeypatch.setenv("FAKE_PIP_LOG", str(log))
    monkeypatch.delenv("FAKE_PIP_OFFLINE", raising=False)
    # importlib.metadata sees only the fake site (DistributionFinder.Context.path defaults to sys.path).
    monkeypatch.setattr(importlib.metadata.DistributionFinder.Context, "path",
                        property(lambda self: vars(self).get("path", [str(site)])))
    _ProgressDialogRecord.shown = []
    testing = getattr(request, "param", False)                # Slicer's --testing (the extension factory)
    with SlicerSession(module_dir=MODULE, work=tmp_path / "slicer", testing=testing) as session:
        import slicer.packaging

        # The module installs from a button click, on the GUI thread; the harness emulates no QThread statics.
        monkeypatch.setattr(slicer.packaging, "_isMainQtThread", lambda: True)
        monkeypatch.setattr(slicer.packaging, "_PipProgressDialog", _ProgressDialogRecord)
        monkeypatch.setattr(session.qt, "QThread", _QThreadStatics)
        torch_calls, dialogs = [], []
        monkeypatch.setitem(sys.modules, "PyTorchUtils", pytorchutils_standin(session.slicer, torch_calls, dialogs))
        real_dialog = session.slicer.util.createProgressDialog

        def record_dialog(*args, **kwargs):
            dialog = real_dialog(*args, **kwargs)
            dialogs.append((kwargs.get("labelText", ""), dialog))
            return dialog

        monkeypatch.setattr(session.slicer.util, "createProgressDialog", record_dialog)
        session.load_module("DiffUMambaSeg")
        logic = sys.modules["DiffUMambaSeg"].DiffUMambaSegLogic()

        def pip_calls():
            return [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []

        yield session, logic, pip_calls, site, dialogs, torch_calls


def _installed(site):
    return {p.name.split("-")[0].lower().replace("_", "-") for p in site.glob("*.dist-info")}


def test_a_fresh_slicer_gets_the_runtime_packages_and_nothing_it_bundles_nor_any_training_package(fresh_slicer):
    session, logic, pip_calls, site, dialogs, torch_calls = fresh_slicer
    before = _installed(site)
    session.answer(True)
    assert logic.ensureDependencies() is True
    calls = pip_calls()
    flat = " ".join(" ".join(call) for call in calls).lower()
    for name in ("tensorboard", "matplotlib", "tqdm", "grpcio", "protobuf"):
        assert name not in flat, f"{name} was installed: {calls}"
    added = _installed(site) - before
    assert {"torch", "monai", "scikit-image", "slicerio", "safetensors"} <= added
    assert not added & {"numpy", "scipy", "pydicom", "highdicom", "pillow", "simpleitk", "vtk"}
    assert ["-m", "light_the_torch", "install", "torch>=2.1", "torchvision"] in calls          # torch: PyTorchUtils
    pip_installs = [call for call in calls if call[1] == "pip"]
    assert not any("torch" == c.split(">")[0] for call in pip_installs for c in call[3:])      # never by pip
    # the one question (pip_ensure's own prompt is off): what, internet, size
    questions = [d for d in session.dialogs if d["kind"] == "question"]
    assert len(questions) == 1 and "internet" in questions[0]["text"] and "several GB" in questions[0]["text"]
    # the torch step under a visible progress dialog, closed afterwards; pip's log in pip_ensure's dialog
    assert torch_calls == [("installTorch", False, ">=2.1", (True,))]        # shown while torch installs
    assert len(dialogs) == 1 and "Installing PyTorch" in dialogs[0][0] and "10 minutes" in dialogs[0][0]
    assert not dialogs[0][1].visible                                          # and closed after
    assert any("Successfully installed monai" in line for d in _ProgressDialogRecord.shown for line in d.lines)
    # the next run asks nothing and installs nothing
    count = len(calls)
    assert logic.ensureDependencies() is True and len(pip_calls()) == count


def test_offline_the_message_names_the_network_and_the_wheelhouse(fresh_slicer, monkeypatch):
    """No network: pip fails inside PyTorchUtils (light-the-torch); the error says what to check and how to install
    without internet, instead of "Command 'pip install' returned non-zero exit status 1"."""
    session, logic, pip_calls, site, dialogs, torch_calls = fresh_slicer
    monkeypatch.setenv("FAKE_PIP_OFFLINE", "1")
    before = _installed(site)
    session.answer(True)
    with pytest.raises(Exception) as raised:
        logic.ensureDependencies()
    assert type(raised.value).__name__ == "InstallError"
    message = str(raised.value)
    assert "network" in message and "--no-index --find-links" in message, message
    assert _installed(site) == before
    assert [call[:3] for call in pip_calls()] == [["-m", "pip", "install"]]      # light-the-torch, then nothing
    assert len(dialogs) == 1 and not dialogs[0][1].visible                   # the torch dialog closed on failure


def test_a_complete_slicer_is_asked_nothing(fresh_slicer):
    session, logic, pip_calls, site, dialogs, torch_calls = fresh_slicer
    for name in ("torch", "monai", "scikit-image", "slicerio", "safetensors"):
        _dist_info(site, name, "99.0")
    assert logic.ensureDependencies() is True
    assert pip_calls() == [] and session.dialogs == [] and torch_calls == []


def test_the_offline_way_the_message_gives_works_without_network(fresh_slicer, monkeypatch, tmp_path):
    """Offline, the failure message's own command (a wheelhouse, --no-index --find-links), run in the Python console
    through slicer.util.pip_install, installs every package the module asked for; the module then asks nothing and
    runs pip no more. Its package list follows requirements.txt (a new requirement is in it)."""
    import re

    session, logic, pip_calls, site, dialogs, torch_calls = fresh_slicer
    monkeypatch.setenv("FAKE_PIP_OFFLINE", "1")
    session.answer(True)
    with pytest.raises(RuntimeError) as raised:        # the session imports its own copy of DiffUMambaSegLib
        logic.ensureDependencies()
    assert type(raised.value).__name__ == "InstallError"
    command = re.search(r'slicer\.util\.pip_install\("(--no-index --find-links <folder> [^"]+)"\)', str(raised.value))
    names = command.group(1).split()[3:]
    expected = [r.name for r in install.runtime_requirements(MODULE) if r.name not in install.SLICER_BUNDLED]
    assert names == expected
    wheelhouse = tmp_path / "wheelhouse"
    wheelhouse.mkdir()
    for name in names:                                          # what "pip download" put there on the other computer
        (wheelhouse / f"{name.replace('-', '_')}-1.0-py3-none-any.whl").write_bytes(b"PK")
    session.slicer.util.pip_install(command.group(1).replace("<folder>", str(wheelhouse)))
    count, torch_tries = len(pip_calls()), len(torch_calls)
    assert logic.ensureDependencies() is True
    assert len(pip_calls()) == count and len(torch_calls) == torch_tries == 1
    assert [d for d in session.dialogs if d["kind"] == "question"] == [session.dialogs[0]]   # only the first time


@pytest.mark.parametrize("fresh_slicer", [True], indirect=True)
@pytest.mark.parametrize("full", [False, True])
def test_in_testing_mode_nothing_is_installed_except_for_a_full_self_test(fresh_slicer, monkeypatch, full):
    """Testing mode (the extension factory): no question, nothing installed and the module says it cannot run;
    a self-test asked to install and run everything (DIFFUMAMBASEG_SELFTEST_FULL=1, self_test.py) installs, with
    pip_ensure's testing-mode skip lifted for it."""
    session, logic, pip_calls, site, dialogs, torch_calls = fresh_slicer
    _dist_info(site, "torch", "2.13.0")
    if full:
        monkeypatch.setenv("DIFFUMAMBASEG_SELFTEST_FULL", "1")
    else:
        monkeypatch.delenv("DIFFUMAMBASEG_SELFTEST_FULL", raising=False)
    assert logic.ensureDependencies() is full
    installed = {call[3].split(">")[0] for call in pip_calls()}
    assert ({"monai", "scikit-image", "slicerio", "safetensors"} <= installed) is full
    assert installed.isdisjoint({"torch", "numpy", "scipy", "pydicom", "highdicom", "pillow", "tensorboard"})
    assert session.dialogs == [] and torch_calls == []


def test_the_self_test_counts_a_slicer_with_the_runtime_packages_as_ready(monkeypatch):
    """The factory self-test's check reads the same list the module installs: a Slicer holding every run-time
    package and torch, but no training extra (tensorboard, matplotlib, tqdm), runs the model flows."""
    from DiffUMambaSegLib import self_test

    present = {r.name.casefold() for r in self_test.install.runtime_requirements(MODULE)} | {"torch"}
    monkeypatch.setattr(self_test.install, "installed_version",   # the Lib a harness reload may have imported afresh
                        lambda name: "999.0" if name.casefold() in present else None)
    assert self_test.dependencies_present(MODULE)
    present.discard("monai")
    assert not self_test.dependencies_present(MODULE)
