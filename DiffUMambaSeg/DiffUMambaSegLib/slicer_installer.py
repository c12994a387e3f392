"""The ``install.Installer`` of the running Slicer application (dialogs, PyTorchUtils, pip)."""

from __future__ import annotations

from typing import Sequence


class SlicerInstaller:
    def confirm(self, message: str) -> bool:
        import slicer

        return slicer.util.confirmOkCancelDisplay(message, "DiffUMambaSeg")

    def install_torch(self, minimum: str) -> bool:
        import slicer

        try:
            import PyTorchUtils
        except ImportError:
            slicer.util.errorDisplay("DiffUMambaSeg needs the PyTorch extension: install it from the Extensions "
                                     "Manager and restart Slicer.")
            return False
        logic = PyTorchUtils.PyTorchUtilsLogic()
        requirement = f">={minimum}" if minimum else None
        return logic.installTorch(askConfirmation=False, torchVersionRequirement=requirement) is not None

    def pip_install(self, specs: Sequence[str]) -> None:
        import slicer

        slicer.util.pip_install(list(specs))
