"""Is a Segment result plausible as a lung GTV? Its volume and its separate pieces, said after every run.

Why: the full-CT research model can mark litres of heart, mediastinum and chest wall in dozens of pieces
(0.27-0.85 l per CT, issue 31); shown without comment in the Segment Editor, such a result looks like a GTV to
correct. A lung GTV is one primary tumour and at most a few nodes: a result with more than ``MAX_PIECES`` pieces of
at least ``MIN_PIECE_ML``, or more than ``MAX_GTV_ML`` in all, is called implausible and the panel points to
*Segment from a click* instead. The limits are deliberately loose (a real GTV must never be called implausible):
the five GTVs of ``../shared/data`` measure 1.4-156 ml in 1-4 pieces of 1 ml or more (lung1_003 and the 4D-Lung
patient have nodes), and the largest NSCLC GTVs reach a few hundred ml.

Reads the segment's own binary label map (its extent only, no export onto the CT grid), so it costs milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ResultSummary", "summarize", "segment_summary", "describe", "IMPLAUSIBLE_TAG", "MAX_GTV_ML",
           "MAX_PIECES", "MIN_PIECE_ML"]

MAX_GTV_ML = 1000.0          # a litre: more than any lung GTV one would expect
MAX_PIECES = 6               # one primary tumour and a few nodes
MIN_PIECE_ML = 1.0           # smaller specks are counted but not as pieces
IMPLAUSIBLE_TAG = "DiffUMambaSeg.Implausible"     # segment tag: why the result is implausible as a GTV


@dataclass(frozen=True)
class ResultSummary:
    volume_ml: float
    pieces: int              # connected components (26-neighbourhood) of at least MIN_PIECE_ML
    specks: int              # smaller components
    problems: tuple = ()     # why it is implausible as a GTV; empty when plausible

    @property
    def plausible(self) -> bool:
        return not self.problems


def summarize(mask: np.ndarray, voxel_ml: float) -> ResultSummary:
    """``mask``: 0/1 voxels of one segment; ``voxel_ml``: one voxel's volume in ml."""
    from scipy import ndimage

    mask = np.asarray(mask) > 0
    volume = float(mask.sum()) * voxel_ml
    labels, count = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, bool))
    sizes = np.bincount(labels.ravel())[1:] * voxel_ml if count else np.zeros(0)
    pieces, specks = int((sizes >= MIN_PIECE_ML).sum()), int((sizes < MIN_PIECE_ML).sum())
    problems = []
    if volume == 0:
        problems.append("no tumour was found")
    if volume > MAX_GTV_ML:
        problems.append(f"{volume / 1000:.1f} litres is more than any lung GTV")
    if pieces > MAX_PIECES:
        problems.append(f"{pieces} separate pieces of {MIN_PIECE_ML:g} ml or more: a lung GTV is one tumour and a few "
                        "nodes")
    return ResultSummary(round(volume, 1), pieces, specks, tuple(problems))


def segment_summary(segmentation, segment_id: str) -> ResultSummary:
    """The summary of one segment of a segmentation node, from its binary label map representation."""
    from . import scene as scene_io

    found = scene_io.segment_voxels(segmentation, segment_id)
    if found is None:
        return summarize(np.zeros((1, 1, 1), bool), 0.0)
    mask, _origin, image = found
    return summarize(mask, float(np.prod(image.GetSpacing())) / 1000.0)


def describe(summary: ResultSummary) -> str:
    """One line for the panel: the volume and pieces, and, when implausible, why and what to do instead."""
    specks = f" (and {summary.specks} specks under {MIN_PIECE_ML:g} ml)" if summary.specks else ""
    line = f"{summary.volume_ml:.1f} ml in {summary.pieces} piece{'s' if summary.pieces != 1 else ''}{specks}."
    if summary.plausible:
        return line
    return (f"{line} Not plausible as a GTV: {'; '.join(summary.problems)}. Check it before use, or use Segment from a "
            "click (Correct with clicks) on the tumour instead.")
