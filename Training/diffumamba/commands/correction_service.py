"""What ``correct`` and ``serve`` share: a correction model loaded once, images read once, one request answered.

The worker keeps the last image by path and content (``files.content_digest``: a file or DICOM folder rewritten
with its modification time kept is read again), so the clicks of one session pay for reading the CT once; every
answer is written atomically and verified before it is reported, under a lock on the output file, so a reply
never describes a file another run replaced.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

__all__ = ["CorrectionService", "is_correction_plan"]


def is_correction_plan(plan: dict) -> bool:
    return plan.get("task") == "correction"


class CorrectionService:
    """Args: model paths (checkpoints or packages, ensembled), device, overlap inside the lesion's box."""

    def __init__(self, models: Sequence[Path], device: str = "auto", overlap: float = 0.25, margin_mm: float = 20.0):
        from ..correction.corrector import Corrector
        from ..inference.models import check_overlap, load_ensemble

        check_overlap(overlap)
        ensemble = load_ensemble(models, device)
        if not is_correction_plan(ensemble.plan):
            raise ValueError(f"{Path(models[0]).name} is not a correction model (its task is "
                             f"{ensemble.plan.get('task', 'segmentation')}); train one with 'train --task correction'")
        self.plan = ensemble.plan
        self.corrector = Corrector(ensemble.networks, ensemble.plan, ensemble.device, overlap, margin_mm)
        self._images: dict = {}

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

            cases = find_inputs([path], expected_modality=self.plan["channel_names"][0] if
                                self.plan["channel_names"][0] == "CT" else None)
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
        from ..propagation.prior_mask import read_prior_mask

        started = time.perf_counter()
        with file_lock(job.output, "output file"):
            case, array, spacing = self.image(job.image)
            current = (read_prior_mask(job.mask, case, what="current mask", allow_empty=True, binary=True).astype(bool)
                       if job.mask else np.zeros(array.shape[1:], bool))
            clicks = grid_clicks(job.request, case.image, source)
            drawn = drawn_slices(current, job.request.fixed_slices, source)
            if not clicks and drawn is None:
                raise ValueError(f"{source}: no click and no fixed slice: nothing to correct")
            corrected = self.corrector.correct(array, spacing, current, clicks, drawn)
            write_mask(corrected, case.image, Path(job.output))
        voxel_ml = float(np.prod(spacing)) / 1000.0
        return {"output": str(job.output), "volume_ml": round(float(corrected.sum()) * voxel_ml, 3),
                "changed_voxels": int((corrected != current).sum()), "clicks": len(clicks),
                "fixed_slices": job.request.fixed_slices, "seconds": round(time.perf_counter() - started, 3)}


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
