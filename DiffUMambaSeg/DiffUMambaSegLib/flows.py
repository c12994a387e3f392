"""The module's two flows, each in three steps so the widget can run the middle one without blocking:

1. ``prepare_*``: write the input nodes to files in a work folder and build the ``diffumamba`` command (the
   inputs as uncompressed NRRD: gzip would cost seconds per CT on the GUI thread before the run can start, as
   MONAIAuto3DSeg avoids with ``UseCompressionOff``; work file names are fixed, never taken from node names);
2. run the command (``runner.CommandRunner``: progress, cancel);
3. ``finish_*``: read the result into a new segmentation node (only then is the scene changed, so a
   cancelled or failed run leaves it as it was).
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from . import scene as scene_io

__all__ = ["Job", "prepare_segmentation", "finish_segmentation", "prepare_propagation", "finish_propagation",
           "prepare_dicom_export", "dicom_export_paths", "load_uncertainty", "gtv_segments", "diffumamba_command",
           "serve_command"]


@dataclass
class Job:
    command: list
    result: Path                   # label map the command writes
    report: Optional[Path] = None  # propagation report (JSON)
    uncertainty: Optional[Path] = None
    files: list = field(default_factory=list)


def diffumamba_command(python: Optional[str] = None) -> list[str]:
    """How to call the command line: ``PythonSlicer -m diffumamba`` in Slicer, this Python elsewhere."""
    return [python or sys.executable, "-m", "diffumamba"]


def serve_command(model: Path, device: str = "auto", python: Optional[str] = None) -> list[str]:
    """The persistent correction worker: loads ``model`` once, then one JSON request per line on stdin."""
    return [*diffumamba_command(python), "serve", "--stdio", "--model", str(model), "--device", device]


def prepare_segmentation(volume_node, models: Sequence[Path], work: Path, device: str = "auto",
                         python: Optional[str] = None, uncertainty: bool = False) -> Job:
    """``uncertainty``: also the voxel-wise disagreement of the 8 mirrorings x the models (8x slower), the map
    that shows where an edit is likely needed."""
    if not models:
        raise ValueError("choose a model first")
    work.mkdir(parents=True, exist_ok=True)
    image = scene_io.write_volume(volume_node, work / "input.nrrd", compress=False)
    out = work / "output"
    command = [*diffumamba_command(python), "predict", str(image), "--model", *map(str, models), "--out", str(out),
               "--device", device, "--progress", "json"]
    if uncertainty:
        command += ["--tta", "--uncertainty"]
    return Job(command, out / "input.nii.gz", uncertainty=out / "input_uncertainty.nii.gz" if uncertainty else None,
               files=[image])


def load_uncertainty(scene, job: Job, name: str):
    """The uncertainty map as a volume node (0: every member agrees), or None when it was not asked for."""
    if job.uncertainty is None:
        return None
    if not job.uncertainty.is_file():
        raise OSError(f"the segmentation finished without writing {job.uncertainty.name}")
    return scene_io.read_volume(scene, job.uncertainty, name)


def finish_segmentation(scene, job: Job, volume_node, name: Optional[str] = None):
    if not job.result.is_file():
        raise OSError(f"the segmentation finished without writing {job.result.name}")
    return scene_io.import_gtv(scene, job.result, volume_node, name or f"{volume_node.GetName()} GTV")


def gtv_segments(segmentation, name: Optional[str] = None) -> list[str]:
    """The segments that make the prior GTV, by the rule of ``diffumamba.dicom.roi_choice.choose_names`` (this
    module runs without torch and cannot import the package; Testing/test_dicom_conformance.py holds the two to
    one table): ``name`` if given (its exact name ignoring case, else a case-insensitive regex matching the whole
    name); else the only segment; else every segment named like a GTV (``gtv.*``, case-insensitive: SlicerRT
    loads an RTSTRUCT's ROIs as segments named GTV-1, GTVp...)."""
    import re

    content = segmentation.GetSegmentation()
    names = [content.GetNthSegment(n).GetName() for n in range(content.GetNumberOfSegments())]
    if name is None and len(names) == 1:
        return names
    pattern = r"gtv.*" if name is None else name
    chosen = [n for n in names if n.casefold() == pattern.casefold()]
    if not chosen:
        try:
            regex = re.compile(pattern, re.IGNORECASE)
        except re.error as err:
            raise ValueError(f"bad segment name or pattern {pattern!r}: {err}") from None
        chosen = [n for n in names if regex.fullmatch(n)]
    if not chosen:
        wanted = repr(name) if name is not None else "named like GTV"
        raise ValueError(f"the prior segmentation has no segment {wanted}; it has {', '.join(names) or 'none'}")
    return chosen


def prepare_propagation(scene, prior_volume, prior_segmentation, current_volume, work: Path,
                        models: Sequence[Path] = (), segment_name: Optional[str] = None, device: str = "auto",
                        python: Optional[str] = None) -> Job:
    """The prior GTV leaves as a label map on the prior volume's grid (the union of its segments, see
    ``gtv_segments``); nothing in the scene changes."""
    segments = gtv_segments(prior_segmentation, segment_name)
    work.mkdir(parents=True, exist_ok=True)
    prior = scene_io.write_volume(prior_volume, work / "prior.nrrd", compress=False)
    current = scene_io.write_volume(current_volume, work / "current.nrrd", compress=False)
    gtv = scene_io.export_labelmap(scene, prior_segmentation, prior_volume, work / "prior_gtv.nrrd", segments,
                                   compress=False)
    out = work / "output"
    command = [*diffumamba_command(python), "propagate", "--prior", str(prior), "--prior-gtv", str(gtv),
               "--current", str(current), "--out", str(out), "--device", device, "--progress", "json"]
    if models:
        command += ["--model", *map(str, models)]
    return Job(command, out / "current.nii.gz", out / "current_propagation.json", files=[prior, current, gtv])


def finish_propagation(scene, job: Job, current_volume, name: Optional[str] = None):
    """(segmentation node on the current volume, the command's report: volumes, change, Dice, timings)."""
    segmentation = finish_segmentation(scene, job, current_volume, name or f"{current_volume.GetName()} GTV (propagated)")
    report = json.loads(job.report.read_text()) if job.report and job.report.is_file() else {}
    return segmentation, report


def prepare_dicom_export(scene, segmentation, reference_volume, dicom_files: Sequence[Path], work: Path, out: Path,
                         formats: Sequence[str] = ("rtstruct", "dicom-seg"), name: str = "GTV",
                         ids: Optional[Sequence[str]] = None, python: Optional[str] = None) -> Job:
    """RTSTRUCT / DICOM SEG of the (edited) segments ``ids`` (default: all), referencing the CT series the
    reference volume came from.

    Each segment leaves as its own 0/1 mask, by segment ID: overlapping segments (an edited "GTV" and the
    "GTV 2" a later run adds beside it) and segments of the same name each keep every voxel, one ROI / SEG
    segment per mask. ``dicom_files``: that series' files (in Slicer, from the DICOM database by the volume's
    instance UIDs, see ``dicom_database``); they are linked into the work folder so the command sees exactly
    one series. ``name``: the output file stem (``file_names.export_stem``).
    """
    if not dicom_files:
        raise ValueError("the reference volume was not loaded from DICOM: its series files are needed for "
                         "RTSTRUCT and SEG (export a label map or .seg.nrrd instead)")
    missing = [str(path) for path in dicom_files if not str(path) or str(path) == "." or not Path(path).is_file()]
    if missing:
        raise FileNotFoundError(f"the CT's DICOM file {missing[0]} is missing: its DICOM files are not where this "
                                "Slicer's DICOM database says")
    series = work / "series"
    series.mkdir(parents=True, exist_ok=True)
    for index, path in enumerate(dicom_files):
        link = series / f"{index:05d}.dcm"
        if not link.exists():
            try:
                link.symlink_to(Path(path).resolve())
            except OSError:        # no symlinks (Windows without privilege): copy
                shutil.copyfile(path, link)
    masks = scene_io.export_segment_masks(scene, segmentation, reference_volume, work, ids)
    if not masks:
        raise ValueError(f"{segmentation.GetName()} has no segment to export")
    command = [*diffumamba_command(python), "export", *(str(path) for _id, _name, path in masks),
               "--reference", str(series), "--out", str(out), "--names", *(n for _id, n, _path in masks),
               "--format", *formats, "--name", name]
    return Job(command, out / f"{name}_rtstruct.dcm" if "rtstruct" in formats else out / f"{name}_seg.dcm",
               files=[path for _id, _name, path in masks])


def dicom_export_paths(out: Path, name: str, formats: Sequence[str]) -> list[Path]:
    """The files ``prepare_dicom_export``'s command writes (asked about before they are replaced)."""
    suffixes = {"rtstruct": "_rtstruct.dcm", "dicom-seg": "_seg.dcm"}
    return [Path(out) / f"{name}{suffixes[form]}" for form in formats]
