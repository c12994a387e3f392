"""Validation of a correction model that scores what ``diffumamba correct`` does.

The validation cases are read from the raw dataset, on their own grids; each gets a session of simulated clicks
from an empty mask through ``Corrector`` (lesion box, resampling to the model's grid, progressive merge, back onto
the image's grid), the same code ``correct`` and the worker run. So the Dice the training log shows is the Dice a
user would get after that many clicks, not a Dice on the preprocessed grid with the whole box redrawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["CorrectionValidation"]


@dataclass
class CorrectionValidation:
    """Mean Dice after ``clicks`` simulated clicks from an empty mask, on ``cases`` (``data.dataset.Case``: raw files).

    The images are read once and kept (a few cases of a lesion dataset are small)."""

    cases: Sequence
    plan: dict
    clicks: int = 3

    def __post_init__(self):
        import SimpleITK as sitk

        from ..imageio import read_scalar_image

        self._loaded = []
        for case in self.cases:
            image = read_scalar_image(case.images[0])
            channels = [sitk.GetArrayFromImage(read_scalar_image(p)).astype(np.float32) for p in case.images]
            label = sitk.GetArrayFromImage(read_scalar_image(case.label)) > 0
            self._loaded.append((np.stack(channels), tuple(reversed(image.GetSpacing())), label))

    def scores(self, network, device) -> list[list[float]]:
        """Dice after 0..clicks clicks, per case."""
        from .corrector import Corrector
        from .session import simulate_session

        corrector = Corrector([network], self.plan, device)
        was_training = network.training
        network.eval()
        try:
            return [simulate_session(lambda mask, clicks, image=image, spacing=spacing:
                                     corrector.correct(image, spacing, mask, clicks),
                                     label, np.zeros(label.shape, bool), spacing, self.clicks)
                    for image, spacing, label in self._loaded if label.any()]
        finally:
            network.train(was_training)

    def __call__(self, network, device) -> float:
        found = self.scores(network, device)
        return float(np.mean([s[-1] for s in found])) if found else float("nan")
