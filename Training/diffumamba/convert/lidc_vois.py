"""LIDC-IDRI nodule crops (``../shared/data/lidc_idri_nodule_vois``) as training cases: each crop as it is, or each
crop's lesion pasted into whole chest CTs (``data/lesion_pasting.py``), which a click model needs (a crop shows
only millimetres of context).

Case names start with the LIDC patient (``LIDC-IDRI-0001_n1``, ``LIDC-IDRI-0001_n1_A0001``), and the dataset
records the pattern that groups them (``group_pattern``), so folds keep every nodule of a patient on one side.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

__all__ = ["NoduleVoi", "GROUP_PATTERN", "read_voi_folder", "crop_cases", "pasted_cases", "read_host",
           "boxes_mask", "patient_number"]

# The LIDC patient of a case name, else the whole name (a full CT appended to the dataset is its own patient).
GROUP_PATTERN = r"^(LIDC-IDRI-\d{4})_|^(.+)$"
_FILE = re.compile(r"^(LIDC-IDRI-\d{4})_R_(\d+)\.nii\.gz$")


@dataclass(frozen=True)
class NoduleVoi:
    """One nodule crop: its files, patient and the metadata's diameter."""

    patient: str
    nodule: int
    image: Path
    mask: Path
    diameter_mm: float

    @property
    def name(self) -> str:
        return f"{self.patient}_n{self.nodule}"


def patient_number(patient: str) -> int:
    return int(patient.rsplit("-", 1)[1])


def read_voi_folder(folder: Path) -> list[NoduleVoi]:
    """Every crop listed in ``metadata.csv`` whose image and mask exist; a listed crop without its files, or a file
    the metadata does not list, is an error (a partial copy would otherwise train on a silent subset)."""
    folder = Path(folder)
    table = folder / "metadata.csv"
    if not table.is_file():
        raise FileNotFoundError(f"{table} is missing: give the lidc_idri_nodule_vois folder (image/, mask/, "
                                "metadata.csv)")
    vois = []
    with table.open(newline="") as handle:
        for row in csv.DictReader(handle):
            match = _FILE.match(row["file"])
            if not match:
                raise ValueError(f"{table}: unexpected file name {row['file']!r}")
            vois.append(NoduleVoi(match.group(1), int(match.group(2)), folder / "image" / row["file"],
                                  folder / "mask" / row["file"], float(row["diameter_mm"])))
    missing = [str(p) for v in vois for p in (v.image, v.mask) if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} file(s) listed in {table} are missing, e.g. {missing[0]}: copy "
                                "the whole folder again")
    listed = {v.image.name for v in vois}
    stray = sorted(p.name for p in (folder / "image").glob("*.nii.gz") if p.name not in listed)
    if stray:
        raise ValueError(f"{folder / 'image'} holds {len(stray)} crop(s) metadata.csv does not list, e.g. {stray[0]}")
    return vois


def _read_pair(voi: NoduleVoi):
    import SimpleITK as sitk

    from ..geometry import grid_differences
    from ..imageio import read_scalar_image

    image = read_scalar_image(voi.image)
    mask = read_scalar_image(voi.mask)
    differences = grid_differences(image, mask)
    if differences:
        raise ValueError(f"{voi.mask} is not on its image's grid ({'; '.join(differences)})")
    binary = sitk.GetArrayFromImage(mask)
    if not binary.any():
        raise ValueError(f"{voi.mask} is empty")
    return image, sitk.Cast(mask > 0, sitk.sitkUInt8)


def crop_cases(vois: Sequence[NoduleVoi]):
    """The crops as cases, unchanged (their tight context included)."""
    from .run import SourceCase

    def loader(voi):
        def load():
            image, mask = _read_pair(voi)
            return [image], mask
        return load

    return [SourceCase(v.name, loader(v)) for v in vois]


def boxes_mask(boxes_json: Path, image) -> np.ndarray:
    """The tumour boxes of a Lung-PET-CT-Dx ``boxes.json`` (pixel boxes per slice, slice z in mm) as a mask on
    ``image``'s grid: what pasting must stay away from (the tumour there has no voxel mask)."""
    mask = np.zeros(image.GetSize()[::-1], bool)
    for box in json.loads(Path(boxes_json).read_text()):
        k = image.TransformPhysicalPointToIndex(
            image.TransformIndexToPhysicalPoint((0, 0, 0))[:2] + (float(box["z_mm"]),))[2]
        if not 0 <= k < mask.shape[0]:
            raise ValueError(f"{boxes_json}: a box at z {box['z_mm']} mm lies outside the CT")
        mask[k, box["row_min"]:box["row_max"] + 1, box["column_min"]:box["column_max"] + 1] = True
    return mask


def read_host(path: Path, avoid: Optional[Path] = None):
    """(name, CT image, tumour mask or None) of a host CT: an image file or a DICOM series folder; ``avoid``: a label
    map on its grid or a ``boxes.json``."""
    import SimpleITK as sitk

    from ..mask_io import read_label_map
    from ..imageio import read_scalar_image

    path = Path(path)
    if path.is_dir():
        reader = sitk.ImageSeriesReader()
        files = reader.GetGDCMSeriesFileNames(str(path))
        if not files:
            raise ValueError(f"{path}: no DICOM series found")
        reader.SetFileNames(files)
        image = reader.Execute()
        name = path.parent.name if path.name in ("ct", "CT") else path.name
    else:
        image = read_scalar_image(path)
        name = re.sub(r"(_0000)?\.(nii\.gz|nii|nrrd|mha)$", "", path.name)
    mask = None
    if avoid is not None:
        avoid = Path(avoid)
        if avoid.suffix == ".json":
            mask = boxes_mask(avoid, image)
        else:
            label = read_label_map(avoid)[0]
            mask = sitk.GetArrayFromImage(label) > 0
            if mask.shape != sitk.GetArrayFromImage(image).shape:
                raise ValueError(f"{avoid} is not on the grid of {path}")
    return re.sub(r"[^A-Za-z0-9.-]", "-", name), image, mask


def pasted_cases(vois: Sequence[NoduleVoi], hosts: Sequence, per_lesion: int = 1, seed: int = 0,
                 box_mm: float = 80.0) -> list:
    """``per_lesion`` cases per crop (``{patient}_n{nodule}_p{k}``), each its lesion pasted into a seeded choice of
    ``hosts`` (``lesion_pasting.Host``; another host when the first has no room for the lesion)."""
    from ..data.lesion_pasting import paste_lesion
    from .run import SourceCase

    def loader(voi, k):
        def load():
            rng = np.random.default_rng([seed, patient_number(voi.patient), voi.nodule, k])
            image, mask = _read_pair(voi)
            order = rng.permutation(len(hosts))
            for index in order:                  # a host whose lungs have no room for this lesion: the next one
                pasted = paste_lesion(hosts[index], image, mask, rng, box_mm)
                if pasted is not None:
                    return [pasted[0]], pasted[1]
            raise ValueError(f"no host has room for {voi.image.name} ({voi.diameter_mm:.0f} mm)")
        return load

    return [SourceCase(f"{voi.name}_p{k}", loader(voi, k)) for voi in vois for k in range(per_lesion)]
