"""Preprocessed cases on disk, keyed by the plan's hash, so a second run skips the work.

    OUT/plan_<hash12>/plan.json
    OUT/plan_<hash12>/cases/<case>.npz    data (C, z, y, x) float32, label (z, y, x) int16
    OUT/plan_<hash12>/cases/<case>.json   CaseProperties (to restore predictions onto the input grid) and
                                          "sources": size, mtime_ns and content hash of each raw file

Each file is written atomically, so an interrupted run resumes where it stopped and never leaves a
half-written case behind. A cached case is used only while its raw files are unchanged: same size,
modification time and content hash (``file_signature``), so a replaced image or label is preprocessed
again. A cache file that cannot be read (cut short, damaged) is recomputed by ``preprocess_cases``.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np

from ..files import atomic_write_bytes, atomic_write_text
from .dataset import Case
from .fingerprint import read_case
from .plan import Plan
from .preprocessing import CaseProperties, preprocess_case

__all__ = ["plan_folder", "preprocess_cases", "load_case", "file_signature", "source_signatures"]

# Version of the resampling a cached case was made with: 2 since an axis of 2 voxels is no longer interpolated by
# ITK's cubic B-spline, which read outside the image there (issue 28); older cases with such an axis are recomputed.
RESAMPLING = 2
WHOLE_FILE_HASH_BYTES = 4 << 20   # files up to this size are hashed whole (labels); larger: first + last MiB
HASH_BLOCK = 1 << 20
# Measured on the real CTs here (page-cached, 1 thread): SHA-256 of a whole 17.8 MB NRRD CT 14 ms, of a
# 70.5 MB DICOM series 54 ms; first + last MiB 1.5 ms whatever the size. Every run checks every case, so large
# files get the constant-cost hash; an edit in their middle changes the size or the modification time.


def file_signature(path: Path) -> dict:
    """Size, modification time (ns) and SHA-256 of ``path`` (whole file up to WHOLE_FILE_HASH_BYTES, else the
    first and last MiB; the size is part of the hash)."""
    path = Path(path)
    stat = path.stat()
    digest = hashlib.sha256(str(stat.st_size).encode())
    with open(path, "rb") as handle:
        if stat.st_size <= WHOLE_FILE_HASH_BYTES:
            for block in iter(lambda: handle.read(HASH_BLOCK), b""):
                digest.update(block)
        else:
            digest.update(handle.read(HASH_BLOCK))
            handle.seek(stat.st_size - HASH_BLOCK)
            digest.update(handle.read(HASH_BLOCK))
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest.hexdigest()}


def source_signatures(case: Case) -> dict:
    """File name -> ``file_signature`` of every raw file of ``case`` (channels, then the label)."""
    paths = [*case.images, *([case.label] if case.label is not None else [])]
    return {Path(p).name: file_signature(p) for p in paths}


def _cached_sources(folder: Path, name: str):
    """The "sources" record of a cached, complete and readable case; None when it must be computed."""
    cases = Path(folder) / "cases"
    try:
        record = json.loads((cases / f"{name}.json").read_text())
        with zipfile.ZipFile(cases / f"{name}.npz") as bundle:     # cut short: no readable zip directory
            if "data.npy" not in bundle.namelist():
                return None
        properties = CaseProperties.from_dict(record)
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile):
        return None
    if 2 in properties.cropped_shape and record.get("resampling") != RESAMPLING:
        return None                    # cached before 2-voxel axes were resampled right (finite but wrong values)
    return record.get("sources") if isinstance(record, dict) else None


def plan_folder(out_root: Path, plan: Plan) -> Path:
    return Path(out_root) / f"plan_{plan.hash()[:12]}"


def preprocess_cases(cases: list[Case], plan: Plan, out_root: Path,
                     progress: Optional[Callable[[Iterable], Iterable]] = None) -> tuple[Path, int]:
    """Preprocess every case not yet in the cache; returns (plan folder, number of cases computed now)."""
    folder = plan_folder(out_root, plan)
    (folder / "cases").mkdir(parents=True, exist_ok=True)
    plan_file = folder / "plan.json"
    if not plan_file.exists():
        atomic_write_text(plan_file, plan.to_json() + "\n")
    todo, signatures = [], {}
    for case in cases:
        try:
            signatures[case.name] = source_signatures(case)
        except OSError as err:
            raise FileNotFoundError(f"{case.name}: cannot read its raw file: {err}") from None
        if _cached_sources(folder, case.name) != signatures[case.name]:
            todo.append(case)
    for case in (progress(todo) if progress else todo):
        data, label, spacing, _ = read_case(case)
        out, out_label, properties = preprocess_case(data, label, spacing, plan.target_spacing, plan.channel_names,
                                                     plan.intensities, plan.image_order, plan.linear_labels,
                                                     source=case.name, separate_z_order=plan.separate_z_order)
        buffer = io.BytesIO()
        arrays = {"data": out.astype(np.float32)}
        if out_label is not None:
            arrays["label"] = out_label.astype(np.int16)
        np.savez(buffer, **arrays)
        atomic_write_bytes(folder / "cases" / f"{case.name}.npz", buffer.getvalue())
        # The properties file is written last: its presence marks the case as complete.
        record = {**properties.to_dict(), "sources": signatures[case.name], "resampling": RESAMPLING}
        atomic_write_text(folder / "cases" / f"{case.name}.json", json.dumps(record) + "\n")
    return folder, len(todo)


def load_case(folder: Path, name: str) -> tuple[np.ndarray, Optional[np.ndarray], CaseProperties]:
    """A cached case; a file that cannot be read raises ValueError naming the case, the file and the fix."""
    cases = Path(folder) / "cases"
    path = cases / f"{name}.npz"
    try:
        with np.load(path) as arrays:
            data = arrays["data"]
            label = arrays["label"] if "label" in arrays else None
        path = cases / f"{name}.json"
        properties = CaseProperties.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise FileNotFoundError(f"cached case {name} is missing {path}; preprocess the dataset again (train or "
                                f"'diffumamba preprocess' computes missing cases)") from None
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"cached case {name} ({path}) is unreadable ({type(err).__name__}: {err}); delete that "
                         f"file (or the cache folder {folder}) and run again: the case is then recomputed "
                         "from its raw files") from None
    return data, label, properties
