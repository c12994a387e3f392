"""``diffumamba propagate``: carry the prior visit's GTV onto the current scan (register, warp, refine)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from ..files import output_lock
from ..inference.outputs import FORMATS
from .registration_options import add_registration_arguments, registration_settings
from .progress_option import add_progress_argument


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "propagate", help="propagate a prior GTV onto a follow-up scan (registration, optional refinement model)",
        description="Register the prior scan to the current one (rigid, then a B-spline around the GTV; Mattes "
                    "mutual information, restricted to the body on CT), warp the prior GTV onto the current grid "
                    "and, with --model (a checkpoint trained with 'train --task propagation'), refine it with the "
                    "current scan. Writes the GTV on the current grid in --format, and NAME_propagation.json with "
                    "prior and current volume, change and the registration's figures.")
    parser.add_argument("--prior", type=Path, required=True, help="prior-visit scan: DICOM series folder or image file")
    parser.add_argument("--prior-gtv", type=Path, required=True, metavar="PATH",
                        help="prior GTV: RTSTRUCT or DICOM SEG file (with a DICOM --prior), .seg.nrrd, or label map")
    parser.add_argument("--current", type=Path, required=True, help="current scan: DICOM series folder or image file")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--model", type=Path, nargs="+", metavar="CHECKPOINT",
                        help="propagation checkpoint(s) or model packages (.zip), ensembled; without: registration only")
    parser.add_argument("--prior-roi", metavar="NAME_OR_REGEX",
                        help="structure(s) of --prior-gtv to propagate (default: the only one, else names matching "
                             "'gtv.*', case-insensitive)")
    parser.add_argument("--prior-label", type=int, help="label value to propagate when --prior-gtv is a label map "
                                                        "(default: every non-zero voxel)")
    parser.add_argument("--prior-series-uid", help="the prior series when the --prior folder holds several")
    parser.add_argument("--current-series-uid", help="the current series when the --current folder holds several")
    parser.add_argument("--format", nargs="+", choices=FORMATS, default=["nifti"], dest="formats",
                        help="output formats (default nifti); dicom-seg and rtstruct need a DICOM --current")
    parser.add_argument("--different-patients", action="store_true",
                        help="propagate although the prior and current DICOM series name different patients "
                             "(PatientID or patient name), e.g. after re-anonymisation; refused otherwise")
    parser.add_argument("--save-registered", action="store_true",
                        help="also write the registered prior scan and prior GTV on the current grid (for review)")
    add_registration_arguments(parser)
    refinement = parser.add_argument_group("refinement (with --model)")
    refinement.add_argument("--search-margin-mm", type=float, default=15.0, metavar="MM",
                            help="keep the refined GTV within this distance of the registered prior GTV (default 15; "
                                 "0: anywhere)")
    refinement.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    refinement.add_argument("--overlap", type=float, help="sliding-window overlap (default: the model's, else 0.5)")
    refinement.add_argument("--crop", choices=["auto", "none", "lungs"], default="auto",
                            help="restrict refinement to the lungs' box on CT (auto: what the model's plan says)")
    add_progress_argument(parser, json_lines=True)
    parser.add_argument("--overwrite", action="store_true",
                        help="replace outputs of the same name already in --out (refused otherwise)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..inference.models import check_overlap, load_ensemble
    from ..inference.progress import make_progress
    from ..propagation.pipeline import is_propagation_plan, propagate
    from ..mask_io import read_mask
    from ..propagation.registration import looks_like_ct

    settings = registration_settings(args)
    if args.search_margin_mm < 0:
        raise ValueError("--search-margin-mm must be >= 0")
    check_overlap(args.overlap)                      # before loading any checkpoint
    networks, plan, modality, device, overlap, crop = [], None, None, "cpu", 0.5, "none"
    label_names = {0: "background", 1: "GTV"}
    if args.model:
        ensemble = load_ensemble(args.model, args.device)
        if not is_propagation_plan(ensemble.plan):
            raise ValueError(f"{args.model[0].name} is not a propagation model (its inputs are "
                             f"{', '.join(ensemble.plan['channel_names'])}); train one with 'train --task propagation', "
                             "or leave out --model for registration only")
        networks, plan, device = ensemble.networks, ensemble.plan, ensemble.device
        modality, overlap, crop, label_names = (plan["channel_names"][0], ensemble.overlap(args.overlap),
                                                ensemble.crop(args.crop), ensemble.label_names)
    prior = _one_case(args.prior, args.prior_series_uid, modality, "--prior")
    current = _one_case(args.current, args.current_series_uid, modality, "--current")
    if prior.modality and current.modality and prior.modality != current.modality:
        raise ValueError(f"the prior scan is {prior.modality} and the current one {current.modality}; "
                         "propagation needs two scans of the same modality")
    prior_is_ct, current_is_ct = looks_like_ct(prior.image), looks_like_ct(current.image)
    if prior_is_ct != current_is_ct:
        ct, other = ("prior", "current") if prior_is_ct else ("current", "prior")
        raise ValueError(f"the {ct} scan is a CT (Hounsfield units) and the {other} one is not; propagation "
                         "needs two scans of the same modality")
    if any(f in ("dicom-seg", "rtstruct") for f in args.formats) and current.slices is None:
        raise ValueError("DICOM SEG and RTSTRUCT outputs need the current scan as a DICOM series")
    if not args.different_patients:
        check_same_patient(prior, current, args.prior, args.current)
    prior_mask = read_mask(args.prior_gtv, prior, args.prior_roi, args.prior_label, what="prior GTV")
    planned = _planned_outputs(args, current.name)  # checked before registering: a refusal then costs nothing

    progress = make_progress(args.progress)
    try:
        result = propagate(current.image, prior.image, prior_mask, settings, networks=networks, plan=plan,
                           overlap=overlap, device=device, crop=crop, search_margin_mm=args.search_margin_mm or None,
                           progress=lambda stage, fraction: progress.report(stage, 0.95 * fraction, current.name))
        progress.report("write", 0.95, current.name)
        written = _write_outputs(args, settings, current, result, label_names, planned)
        progress.report("done", 1.0, current.name)
    finally:
        progress.close()
    r = result.report
    change = "n/a" if r["volume_change_percent"] is None else f"{r['volume_change_percent']:+.1f} %"
    print(f"{current.name}: prior GTV {r['prior_volume_ml']:.1f} ml -> current {r['current_volume_ml']:.1f} ml "
          f"({change}; {'refined by the model' if r['refined'] else 'registration only'}); Dice registered prior vs "
          f"result {r['dice_registered_prior_vs_result']:.3f}; "
          + ("the scans are identical: nothing to register" if r["same_scan"] else
             f"registration {sum(r['registration_seconds'].values()):.0f} s")
          + f"; wrote {', '.join(p.name for p in written)}")
    return 0


def _patient(case) -> tuple[str, str]:
    """(PatientID, patient name) of a DICOM input, stripped; ('', '') for an image file."""
    if not case.slices:
        return "", ""
    header = case.slices[0]
    return (str(getattr(header, "PatientID", "") or "").strip(),
            " ".join(str(getattr(header, "PatientName", "") or "").replace("^", " ").split()).lower())


def check_same_patient(prior, current, prior_path=None, current_path=None) -> None:
    """Refuse a prior and a current DICOM series of different patients (PatientID, or patient name, where both
    series give one); image files carry no patient, so nothing is checked for them."""
    (prior_id, prior_name), (current_id, current_name) = _patient(prior), _patient(current)
    problems = []
    if prior_id and current_id and prior_id != current_id:
        problems.append(f"PatientID {prior_id!r} vs {current_id!r}")
    if prior_name and current_name and prior_name != current_name:
        problems.append(f"patient name {str(prior.slices[0].PatientName)!r} vs {str(current.slices[0].PatientName)!r}")
    if problems:
        raise ValueError(f"the prior scan ({prior_path or prior.name}) and the current scan ({current_path or current.name}) "
                         f"are of different "
                         f"patients ({'; '.join(problems)}): a GTV is propagated onto the same patient's follow-up "
                         "only. Give that patient's scans, or --different-patients if you know they are one patient "
                         "(e.g. re-anonymised)")


def _one_case(path: Path, series_uid, modality, option: str):
    from ..inference.inputs import find_inputs

    cases = find_inputs([path], series_uid, modality)
    if len(cases) != 1:
        raise ValueError(f"{option} must be one scan (a DICOM series folder or an image file); {path} holds "
                         f"{len(cases)} images")
    return cases[0][1]()


def _planned_outputs(args: argparse.Namespace, name: str) -> dict[str, Path]:
    """Every file this run may write into --out, checked against the rules every command follows before any work:
    --out is a folder we can write in, no output replaces an input, none replaces an existing file unless
    --overwrite (files.check_writable_folder, check_not_an_input, refuse_existing)."""
    from ..files import check_not_an_input, check_writable_folder, refuse_existing
    from ..inference.outputs import output_paths

    check_writable_folder(args.out, "--out")
    planned = output_paths(args.out, name, args.formats)
    if args.save_registered:
        planned["registered GTV"] = args.out / f"{name}_registered_prior_gtv.nii.gz"
        planned["registered image"] = args.out / f"{name}_registered_prior.nii.gz"
    planned["report"] = args.out / f"{name}_propagation.json"
    for path in planned.values():
        check_not_an_input(path, {"--prior": args.prior, "--prior-gtv": args.prior_gtv, "--current": args.current},
                           "--out")
    if not args.overwrite:
        refuse_existing(planned.values(), "--out", "--overwrite")
    return planned


def _write_outputs(args, settings, current, result, label_names, planned: dict[str, Path]) -> list[Path]:
    """The GTV in every --format, the registered prior (--save-registered) and the report, all or none: if one
    fails (a full disk), the others written by this run are removed and the error says so."""
    from ..files import OutputError
    from ..inference.outputs import write_prediction
    from ..inference.predictor import Prediction

    created = not args.out.exists()
    args.out.mkdir(parents=True, exist_ok=True)        # only now: a refused registration leaves no folder
    written: list[Path] = []
    try:
        with output_lock(args.out):                     # a second run into the same folder is refused
            written += write_prediction(current, Prediction(result.labels), args.out, args.formats, label_names,
                                        warn=lambda m: print(m, file=sys.stderr))
            if args.save_registered:
                _write_registered(current, result, planned, written)
            written.append(planned["report"])
            _write_report(planned["report"], args, settings, result.report)
    except BaseException as err:
        for path in written:
            path.unlink(missing_ok=True)
        if created and args.out.is_dir() and not any(args.out.iterdir()):
            args.out.rmdir()
        if isinstance(err, OSError) and written:
            raise OutputError(err.errno, f"{err}; the {len(written) - 1} file(s) this run had written to {args.out} "
                                         "were removed, so nothing of it is left") from err
        raise
    return written


def _write_registered(current, result, planned: dict[str, Path], written: list[Path]) -> None:
    """Appends each path to ``written`` before writing it, so a failure removes it too."""
    import numpy as np
    import SimpleITK as sitk

    from ..imageio import write_image_atomic

    mask = sitk.GetImageFromArray(result.warped_prior.astype(np.uint8))
    mask.CopyInformation(current.image)
    for image, key in ((mask, "registered GTV"), (result.warped_prior_image, "registered image")):
        written.append(planned[key])
        write_image_atomic(image, planned[key])


def _write_report(path: Path, args, settings, report: dict) -> None:
    from ..files import atomic_write_text

    record = {"prior": str(args.prior), "prior_gtv": str(args.prior_gtv), "current": str(args.current),
              "models": [str(m) for m in args.model or []], "registration_settings": asdict(settings), **report}
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
