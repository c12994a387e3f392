"""The Slicer module's install logic with a fake installer: one question listing everything, torch only
through PyTorchUtils, Slicer's own packages never touched, nothing installed when the user declines."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "DiffUMambaSeg"))

from DiffUMambaSegLib.install import REQUIREMENTS, Requirement, install_missing, missing  # noqa: E402


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


def test_missing_compares_versions_and_skips_what_slicer_ships():
    versions = {"monai": "1.2.0", "pydicom": "3.0.1", "numpy": None, "SimpleITK": None}
    found = missing([Requirement("monai", "1.3"), Requirement("pydicom", "3.0"), Requirement("numpy", "2"),
                     Requirement("SimpleITK"), Requirement("tqdm")], versions.get)
    assert [r.name for r in found] == ["monai", "tqdm"]
    assert missing([Requirement("monai", "1.3")], {"monai": "1.10.0"}.get) == []     # 1.10 > 1.3, not a string compare


def test_one_question_then_torch_then_dependencies_then_the_package():
    installer = FakeInstaller()
    assert install_missing(installer, "/ext/diffumamba", torch_version=None, installed=lambda name: None)
    assert len(installer.asked) == 1 and "torch>=2.1 (through the PyTorch extension)" in installer.asked[0]
    assert installer.torch == ["2.1"]
    assert installer.pip[0] == [r.spec() for r in REQUIREMENTS] and installer.pip[1] == ["--no-deps", "/ext/diffumamba"]
    assert not any("torch" in spec or "SimpleITK" in spec or spec == "numpy" for specs in installer.pip for spec in specs)


def test_nothing_happens_when_declined_or_complete():
    declined = FakeInstaller(answer=False)
    assert not install_missing(declined, "x", torch_version="2.0", installed=lambda name: None)
    assert declined.torch == [] and declined.pip == []
    complete = FakeInstaller()
    assert install_missing(complete, "x", torch_version="2.13.0", installed=lambda name: "99")
    assert complete.asked == [] and complete.pip == []


def test_no_dependency_is_installed_when_torch_fails():
    installer = FakeInstaller(torch_ok=False)
    assert not install_missing(installer, "x", torch_version=None, installed=lambda name: None)
    assert installer.pip == []


def test_an_old_python_is_refused_with_the_reason_before_anything_is_asked(monkeypatch):
    from DiffUMambaSegLib import install

    assert install.unsupported_python((3, 12, 10)) is None
    message = install.unsupported_python((3, 9, 10))
    assert "3.9.10" in message and "Slicer 5.12" in message
    monkeypatch.setattr(install.sys, "version_info", (3, 9, 10, "final", 0))
    installer = FakeInstaller()
    try:
        install_missing(installer, "src", None, installed=lambda name: None)
    except RuntimeError as error:
        assert "Python 3.10 or newer" in str(error)
    else:
        raise AssertionError("Python 3.9 was accepted")
    assert installer.asked == [] and installer.pip == [] and installer.torch == []
