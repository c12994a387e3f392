"""The ``install.Installer`` of the running Slicer application: the dialog, PyTorchUtils, ``pip_ensure``.

torch: ``PyTorchUtilsLogic.installTorch`` (SlicerPyTorch ``PyTorchUtils.py``) pip-installs light-the-torch, then runs
it through the blocking ``slicer.util._executePythonModule``: minutes with no output of its own, so a progress
dialog says what is going on for the whole step (``executePythonModule`` processes events for each line pip
prints, which keeps the dialog painted). The other packages: Slicer 5.12's ``slicer.packaging.pip_ensure`` (its own
progress dialog with pip's log, testing-mode skip, restart prompt), with the module's question already answered.
"""

from __future__ import annotations

from typing import Sequence

REQUESTER = "DiffUMambaSeg"
TORCH_MESSAGE = ("Installing PyTorch (through the PyTorch extension): downloading up to several GB, which can take "
                 "10 minutes or more. Slicer may not respond meanwhile; the pip output is in the Python console.")


def full_self_test() -> bool:
    """The self-test was asked to install and run everything (self_test.py), e.g. on a test machine."""
    import os

    return os.environ.get("DIFFUMAMBASEG_SELFTEST_FULL") == "1"


class SlicerInstaller:
    def confirm(self, message: str) -> bool:
        import slicer

        if slicer.app.testingEnabled():
            # No dialog in testing mode, and Slicer 5.12.3's confirmOkCancelDisplay answers False there although its
            # docstring says True (util.py:3330-3332 returns testingReturnValue=True, :3273 compares it with
            # QMessageBox.Ok): install only for a full self-test, never on the extension factory's machines.
            return full_self_test()
        return slicer.util.confirmOkCancelDisplay(message, REQUESTER)

    def install_torch(self, minimum: str) -> bool:
        import slicer

        try:
            import PyTorchUtils
        except ImportError:
            slicer.util.errorDisplay("DiffUMambaSeg needs the PyTorch extension: install it from the Extensions "
                                     "Manager and restart Slicer.")
            return False
        progress = slicer.util.createProgressDialog(value=0, maximum=0, labelText=TORCH_MESSAGE,
                                                    windowTitle=f"{REQUESTER} - Installing PyTorch")
        progress.show()
        slicer.app.processEvents()
        try:
            logic = PyTorchUtils.PyTorchUtilsLogic()
            requirement = f">={minimum}" if minimum else None
            return logic.installTorch(askConfirmation=False, torchVersionRequirement=requirement) is not None
        finally:
            progress.close()

    def pip_ensure(self, specs: Sequence[str], skip_packages: Sequence[str]) -> None:
        import slicer.packaging

        # prompt_install=False: install.install_missing asked already, listing these packages (one question).
        # In testing mode pip_ensure installs nothing, unless the self-test was asked to install and run everything.
        slicer.packaging.pip_ensure(list(specs), skip_packages=list(skip_packages), prompt_install=False,
                                    requester=REQUESTER, skip_in_testing=not full_self_test())
