"""The Slicer module's install logic with a fake installer: the requirements are the shipped package's own
pyproject dependencies (one source of truth), one question listing everything, torch only through PyTorchUtils,
Slicer's own packages never touched, the diffumamba package never pip-installed, nothing installed when the
user declines."""

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "DiffUMambaSeg"))

from DiffUMambaSegLib.install import Requirement, install_missing, load_requirements, missing  # noqa: E402

PYPROJECT = REPO / "Training" / "pyproject.toml"


class FakeInstaller:
    def __init__(self, answer=True, torch_ok=True):
        self.answer, self.torch_ok, self.asked, self.torch, self.pip = answer, torch_ok, [], [], []

    def confirm(self, message):
        self.asked.append(message)
        return self.answer

    def install_torch(self, minimum):
        self.torch.append(minimum)
        return self.torch_ok

    def pip_install(self, specs):
        self.pip.append(list(specs))


def test_the_requirements_are_the_packages_own_dependencies():
    """The list the installer checks is read from the pyproject the command line ships with: tensorboard and
    matplotlib (which `diffumamba demo` and the self-test need) and highdicom's minimum included, as pip would."""
    import tomllib

    declared = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    requirements = load_requirements(PYPROJECT)
    assert [r.spec() for r in requirements] == [d.replace(" ", "") for d in declared]
    names = {r.name: r.minimum for r in requirements}
    assert {"tensorboard", "matplotlib", "highdicom", "torch"} <= set(names)
    assert names["highdicom"] == "0.23"


def test_an_unsupported_constraint_is_refused_not_ignored(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\ndependencies = ["monai>=1.3", "numpy<2"]\n')
    with pytest.raises(ValueError, match="numpy<2"):
        load_requirements(tmp_path / "pyproject.toml")


def test_missing_compares_versions_and_skips_torch_and_what_slicer_ships():
    versions = {"monai": "1.2.0", "pydicom": "3.0.1", "numpy": None, "SimpleITK": None, "torch": None}
    found = missing([Requirement("monai", "1.3"), Requirement("pydicom", "3.0"), Requirement("numpy", "2"),
                     Requirement("SimpleITK"), Requirement("tqdm"), Requirement("torch", "2.1")], versions.get)
    assert [r.name for r in found] == ["monai", "tqdm"]
    assert missing([Requirement("monai", "1.3")], {"monai": "1.10.0"}.get) == []     # 1.10 > 1.3, not a string compare


def test_one_question_then_torch_then_dependencies_and_never_the_package_itself():
    installer = FakeInstaller()
    requirements = load_requirements(PYPROJECT)
    assert install_missing(installer, requirements, installed=lambda name: None)
    assert len(installer.asked) == 1 and "torch>=2.1 (through the PyTorch extension)" in installer.asked[0]
    assert installer.torch == ["2.1"]
    expected = [r.spec() for r in requirements if r.name not in ("torch", "numpy", "SimpleITK")]
    assert installer.pip == [expected]
    assert "tensorboard>=2.10" in expected and "matplotlib>=3.6" in expected
    assert not any("diffumamba" in spec or "--no-deps" in spec for specs in installer.pip for spec in specs)


def test_nothing_happens_when_declined_or_complete():
    requirements = load_requirements(PYPROJECT)
    declined = FakeInstaller(answer=False)
    assert not install_missing(declined, requirements, installed=lambda name: None)
    assert declined.torch == [] and declined.pip == []
    complete = FakeInstaller()
    assert install_missing(complete, requirements, installed=lambda name: "99")
    assert complete.asked == [] and complete.pip == []
    old_torch = FakeInstaller()
    assert install_missing(old_torch, requirements, installed=lambda name: "2.0" if name == "torch" else "99")
    assert old_torch.torch == ["2.1"] and old_torch.pip == []


def test_no_dependency_is_installed_when_torch_fails():
    installer = FakeInstaller(torch_ok=False)
    assert not install_missing(installer, load_requirements(PYPROJECT), installed=lambda name: None)
    assert installer.pip == []


def test_an_old_python_is_refused_with_the_reason_before_anything_is_asked(monkeypatch):
    from DiffUMambaSegLib import install

    assert install.unsupported_python((3, 12, 10)) is None
    message = install.unsupported_python((3, 9, 10))
    assert "3.9.10" in message and "Slicer 5.12" in message
    monkeypatch.setattr(install.sys, "version_info", (3, 9, 10, "final", 0))
    installer = FakeInstaller()
    with pytest.raises(RuntimeError, match="Python 3.10 or newer"):
        install_missing(installer, load_requirements(PYPROJECT), installed=lambda name: None)
    assert installer.asked == [] and installer.pip == [] and installer.torch == []


def test_python_3_10_reads_the_same_requirements_without_tomllib(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tomllib(name, *args, **kwargs):
        if name == "tomllib":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    expected = load_requirements(PYPROJECT)
    monkeypatch.setattr(builtins, "__import__", no_tomllib)
    assert load_requirements(PYPROJECT) == expected
