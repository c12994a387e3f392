"""What ``correct``, ``grow-from-seeds`` and ``serve`` share: images read once, one request answered, the answer
written safely; the correction model loaded once (``CorrectionService``) or Grow from seeds (``GrowFromSeedsService``).

The worker keeps the last image by path and content (``files.content_digest``: a file or DICOM folder rewritten
with its modification time kept is read again), so the clicks of one session pay for reading the CT once; every
answer is written atomically and verified before it is reported, under a lock on the output file, so a reply
never describes a file another run replaced.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

__all__ = ["MaskService", "CorrectionService", "GrowFromSeedsService", "is_correction_plan", "write_mask"]


def is_correction_plan(plan: dict) -> bool:
    return plan.get("task") == "correction"


class MaskService(ABC):
    """One correction of a mask by clicks (and drawn slices), from files to a verified file. Subclasses say how
    the mask is corrected (``answer``) and which scans they read (``modality``: "CT", or None for any scan)."""

    modality: Optional[str] = None
    takes_fixed_slices = True

    def __init__(self):
        self._images: dict = {}

    @abstractmethod
    def answer(self, array: np.ndarray, spacing: tuple, current: np.ndarray, clicks: list,
               drawn: Optional[np.ndarray]) -> np.ndarray:
        """The corrected (z, y, x) bool mask of the (1, z, y, x) image ``array``."""

    def image(self, path: Path):
        """(InputCase, (1, z, y, x) float32 array, spacing z, y, x) of ``path``, read again when its content changes."""
        from ..files import content_digest
        from ..inference.inputs import find_inputs

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"image does not exist: {path}")
        key = (str(path.resolve()), content_digest(path))
        if key not in self._images:
            import SimpleITK as sitk

            cases = find_inputs([path], expected_modality=self.modality)
            if len(cases) != 1:
                raise ValueError(f"{path} must be one scan (a DICOM series folder or an image file); it holds "
                                 f"{len(cases)} images")
            case = cases[0][1]()
            array = sitk.GetArrayFromImage(case.image).astype(np.float32)[None]
            self._images = {key: (case, array, tuple(reversed(case.image.GetSpacing())))}   # one image at a time
        return self._images[key]

    def correct(self, job, source: str) -> dict:
        """Answer one ``CorrectJob`` (validated: ``request.parse_job`` / ``check_outputs``); returns what was done
        (volume, changed voxels, seconds). The output file is locked from the first read to the verified write."""
        from ..correction.request import drawn_slices, grid_clicks
        from ..files import file_lock
        from ..mask_io import read_mask

        if job.request.fixed_slices and not self.takes_fixed_slices:
            raise ValueError(f"{source}: {self.what} takes clicks only, not 'fixed_slices' (slices drawn by hand "
                             "are for the correction model: diffumamba correct)")
        started = time.perf_counter()
        with file_lock(job.output, "output file"):
            case, array, spacing = self.image(job.image)
            current = (read_mask(job.mask, case, what="current mask", allow_empty=True, binary=True).astype(bool)
                       if job.mask else np.zeros(array.shape[1:], bool))
            clicks = grid_clicks(job.request, case.image, source)
            drawn = drawn_slices(current, job.request.fixed_slices, source)
            if not clicks and drawn is None:
                raise ValueError(f"{source}: no click and no fixed slice: nothing to correct")
            corrected = self.answer(array, spacing, current, clicks, drawn)
            write_mask(corrected, case.image, Path(job.output))
        voxel_ml = float(np.prod(spacing)) / 1000.0
        return {"output": str(job.output), "volume_ml": round(float(corrected.sum()) * voxel_ml, 3),
                "changed_voxels": int((corrected != current).sum()), "clicks": len(clicks),
                "fixed_slices": job.request.fixed_slices, "seconds": round(time.perf_counter() - started, 3)}


class CorrectionService(MaskService):
    """Args: model paths (checkpoints or packages, ensembled), device, overlap inside the lesion's box."""

    def __init__(self, models: Sequence[Path], device: str = "auto", overlap: float = 0.25, margin_mm: float = 20.0):
        from ..correction.corrector import Corrector
        from ..inference.models import check_overlap, load_ensemble

        super().__init__()
        check_overlap(overlap)
        ensemble = load_ensemble(models, device)
        if not is_correction_plan(ensemble.plan):
            raise ValueError(f"{Path(models[0]).name} is not a correction model (its task is "
                             f"{ensemble.plan.get('task', 'segmentation')}); train one with 'train --task correction'")
        self.plan = ensemble.plan
        self.modality = "CT" if self.plan["channel_names"][0] == "CT" else None
        self.corrector = Corrector(ensemble.networks, ensemble.plan, ensemble.device, overlap, margin_mm)

    def answer(self, array, spacing, current, clicks, drawn):
        return self.corrector.correct(array, spacing, current, clicks, drawn)


class GrowFromSeedsService(MaskService):
    """Grow from seeds (``correction.region_growing``, the click benchmark's baseline without AI) as one request:
    the given mask is the session's start (its seeds), the clicks all of the session's clicks."""

    takes_fixed_slices = False
    what = "grow-from-seeds"

    def __init__(self, margin_mm: float = 20.0):
        super().__init__()
        self.margin_mm = margin_mm

    def answer(self, array, spacing, current, clicks, drawn):
        from ..correction.region_growing import GrowFromSeeds

        return GrowFromSeeds(array[0], spacing, start=current, margin_mm=self.margin_mm).correct(current, clicks)


def write_mask(mask: np.ndarray, reference, path: Path) -> None:
    """The mask as a 0/1 label map on ``reference``'s grid (``.seg.nrrd``: one segment "GTV"), atomic, verified."""
    import SimpleITK as sitk

    if path.name.lower().endswith(".seg.nrrd"):
        from ..inference.seg_nrrd import write_seg_nrrd

        write_seg_nrrd(mask.astype(np.uint8), {1: "GTV"}, reference, path, colors={1: (255, 0, 0)})
        return
    from ..imageio import write_image_atomic

    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.CopyInformation(reference)
    write_image_atomic(image, path)
