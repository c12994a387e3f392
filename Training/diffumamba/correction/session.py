"""The simulated-click protocol: a user who always clicks the largest error, and what that costs.

The same loop scores a correction model while it trains (validation), in ``bench/correct.py`` and in the tests, and
it scores the non-AI baseline too: anything that turns (mask, clicks) into a mask can be put through it.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from ..evaluation.metrics import dice
from .clicks import Click, next_click

__all__ = ["CorrectFn", "simulate_session", "clicks_to_reach"]

CorrectFn = Callable[[np.ndarray, Sequence[Click]], np.ndarray]


def simulate_session(correct: CorrectFn, reference: np.ndarray, start: np.ndarray, spacing: Sequence[float],
                     n_clicks: int) -> list[float]:
    """Dice after 0, 1, ..., ``n_clicks`` clicks, each placed in the largest error of the mask before it and sent
    with every earlier click. Once the mask is exact no click is placed and the Dice stays 1."""
    reference = reference.astype(bool)
    mask, clicks = start.astype(bool), []
    scores = [dice(mask, reference)]
    for _ in range(n_clicks):
        click = next_click(mask, reference, spacing)
        if click is not None:
            clicks.append(click)
            mask = np.asarray(correct(mask, list(clicks)), bool)
        scores.append(dice(mask, reference))
    return scores


def clicks_to_reach(scores: Sequence[float], target: float) -> int:
    """NoC@target: the clicks after which the Dice first reaches ``target``; the click limit (``len(scores) - 1``)
    when it never does, as RITM's protocol counts a failure (report failures separately: ``reached``)."""
    for count, score in enumerate(scores):
        if score >= target:
            return count
    return len(scores) - 1
