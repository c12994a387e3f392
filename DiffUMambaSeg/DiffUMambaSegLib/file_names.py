"""File names the module writes: valid on every operating system, naming the patient, never replacing a file
without asking.

Why: MRML node names are not file names. The DICOM module names a CT ``<series number>: <series description>``
(``DICOMLib/DICOMPlugin.py:281-295`` ``defaultSeriesNodeName``; ``DICOMScalarVolumePlugin.py:175-182``
``cleanNodeName`` removes only ``| / \\ *``), so ``2: CT GTV.seg.nrrd`` is an NTFS alternate data stream on
Windows, and a ``/`` or ``?`` in a name breaks a path on any OS. Series names also repeat across patients, so a
remembered export folder would silently collect one patient's file over another's: the stem carries the patient
ID (or name), the study date and the segmentation name, taken from the ``DICOM.*`` attributes the DICOM module
stores on the subject hierarchy's patient and study items.

Slicer has ``qSlicerCoreIOManager::forceFileNameValidCharacters`` (``Base/QTCore/qSlicerCoreIOManager.h:112``);
this module uses its own rule instead, so that names are the same in Slicer, in scripts and in the tests, and
follow Windows' rules (the strictest) on every OS: no ``<>:"/\\|?*`` or control characters, no trailing dot or
space, none of the reserved device names (CON, PRN, AUX, NUL, COM0-9, LPT0-9, also with an extension), at most
255 characters per name.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Sequence

__all__ = ["valid_file_name", "windows_name_problem", "export_stem", "confirm_overwrite", "MAX_STEM"]

INVALID = re.compile(r'[<>:"/\\|?*\x00-\x1f\x7f]+')
RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"{d}{n}" for d in ("COM", "LPT") for n in "0123456789¹²³")}
MAX_NAME = 255          # NTFS, ext4, APFS: characters (bytes on ext4) per path component
MAX_STEM = 120          # leaves room for suffixes and keeps whole paths under Windows' classic 260 limit


def windows_name_problem(name: str) -> str:
    """Why ``name`` (one path component) is not a valid Windows file name, or "" when it is."""
    if not name:
        return "empty"
    bad = sorted(set(INVALID.findall(name)) - {""})
    if bad:
        return f"contains {''.join(bad)!r}"
    if name[-1] in ". ":
        return "ends with a dot or a space"
    if name.split(".")[0].rstrip(" ").upper() in RESERVED:
        return f"{name.split('.')[0]} is a reserved device name"
    if len(name) > MAX_NAME or len(name.encode("utf-8")) > MAX_NAME:
        return f"longer than {MAX_NAME}"
    return ""


def valid_file_name(text: str, fallback: str = "segmentation", max_length: int = MAX_STEM) -> str:
    """``text`` as a file name stem valid on every OS: invalid characters and white space become ``_`` (runs
    collapsed), no leading or trailing ``._ -``, a reserved device name gets a ``_`` appended, cut to
    ``max_length`` characters; ``fallback`` when nothing is left."""
    name = INVALID.sub("_", str(text))
    name = re.sub(r"\s+", "_", name)
    name = re.sub(r"_{2,}", "_", name).strip("._ -")
    name = name[:max_length].rstrip("._ -")
    if not name:
        name = fallback
    base, dot, rest = name.partition(".")
    if base.upper() in RESERVED:
        name = f"{base}_{dot}{rest}"
    problem = windows_name_problem(name)
    if problem:                   # cannot happen by the rules above; never write a name Windows refuses
        raise ValueError(f"{name!r} is not a valid file name: {problem}")
    return name


def export_stem(hierarchy, segmentation, reference=None) -> str:
    """``<patient ID or name>_<study date>_<segmentation name>``, each part where known (the DICOM attributes of
    the patient and study items that hold the segmentation, or else its reference CT)."""
    from .rt_study_export import study_tags

    tags: dict = {}
    if hierarchy is not None:
        for node in (segmentation, reference):
            item = hierarchy.GetItemByDataNode(node) if node is not None else 0
            if item:
                tags = study_tags(hierarchy, item)
                if tags:
                    break
    patient = tags.get("PatientID") or tags.get("PatientName") or ""
    parts = [patient, tags.get("StudyDate", ""), segmentation.GetName()]
    return valid_file_name("_".join(part for part in parts if part))


def confirm_overwrite(paths: Sequence[Path], ask: Callable[[str], bool]) -> None:
    """Raise ``FileExistsError`` unless none of ``paths`` exists or ``ask`` (the user) agrees to replace them."""
    existing = [Path(p) for p in paths if Path(p).exists()]
    if not existing:
        return
    listed = "\n".join(str(p) for p in existing[:5]) + ("\n..." if len(existing) > 5 else "")
    if not ask(f"These files are already there:\n{listed}\n\nReplace them?"):
        raise FileExistsError(f"Not exported: {existing[0]} is already there (choose another folder, or rename "
                              "the segmentation).")
