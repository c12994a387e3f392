"""Label maps as 3D Slicer segmentation files (``.seg.nrrd``, written with slicerio).

Slicer opens them as named segments with their colour and terminology, so a clinician sees "GTV" coded as a
primary malignant neoplasm rather than "label 1".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..dicom.seg import ABNORMAL_STRUCTURE, PRIMARY_NEOPLASM
from ..imageio import atomic_output, verify_image

__all__ = ["write_seg_nrrd", "TERMINOLOGY"]

TERMINOLOGY = {"contextName": "Segmentation category and type - DICOM master list",
               "category": [ABNORMAL_STRUCTURE[1], ABNORMAL_STRUCTURE[0], ABNORMAL_STRUCTURE[2]],
               "type": [PRIMARY_NEOPLASM[1], PRIMARY_NEOPLASM[0], PRIMARY_NEOPLASM[2]]}


def write_seg_nrrd(labels: np.ndarray, names: dict[int, str], image, path: Path,
                   colors: dict[int, tuple[int, int, int]]) -> None:
    """Write ``labels`` (z, y, x on the grid of the SimpleITK ``image``) as a ``.seg.nrrd``, atomically."""
    import slicerio

    matrix = np.eye(4)
    matrix[:3, :3] = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
    matrix[:3, 3] = image.GetOrigin()
    segmentation = slicerio.create_segmentation(labels.shape[::-1], matrix)
    for value, name in names.items():
        color = [c / 255.0 for c in colors.get(value, (255, 0, 0))]
        slicerio.add_segment(segmentation, np.transpose(labels == value),
                             {"id": f"Segment_{value}", "name": name, "color": color, "terminology": dict(TERMINOLOGY)})
    with atomic_output(path) as temporary:
        slicerio.write_segmentation(str(temporary), segmentation)
        verify_image(temporary)                        # what Slicer will open must read back whole
