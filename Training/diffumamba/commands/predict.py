"""``diffumamba predict``: segment DICOM series or image files with one or more checkpoints."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..inference.outputs import FORMATS
from .progress_option import add_progress_argument


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "predict", help="segment images with trained checkpoints",
        description="Each INPUT is a DICOM series folder, an image file (NIfTI, NRRD, MHA) or a folder of image "
                    "files. Several --model checkpoints are ensembled (probabilities averaged). Outputs lie exactly "
                    "on the input grid; DICOM SEG and RTSTRUCT reference the input series. Exit 2 if a case failed "
                    "(the others are still written; the failed ones are named) or for bad options or models. "
                    "One run at a time writes into an --out folder.")
    parser.add_argument("inputs", type=Path, nargs="+", metavar="INPUT")
    parser.add_argument("--model", type=Path, nargs="+", required=True, metavar="CHECKPOINT",
                        help="one or more .safetensors checkpoints of one plan (e.g. the 5 folds), or model packages (.zip)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--format", nargs="+", choices=FORMATS, default=["nifti"], dest="formats",
                        help="output formats (default nifti); dicom-seg and rtstruct need a DICOM input")
    parser.add_argument("--series-uid", help="the series to segment when a DICOM folder holds several")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--replace-nonfinite", action="store_true",
                        help="replace NaN/Inf voxels with the image's minimum (and say how many) instead of refusing the image")
    parser.add_argument("--tta", action="store_true", help="average over the 8 mirrorings (8x slower)")
    parser.add_argument("--overlap", type=float,
                        help="sliding-window overlap (default: the model's, e.g. 0.25 for the lung-cpu preset, else 0.5)")
    parser.add_argument("--probabilities", action="store_true", help="also write the class probabilities")
    parser.add_argument("--uncertainty", action="store_true",
                        help="also write the fraction of ensemble/TTA members disagreeing with the result")
    parser.add_argument("--crop", choices=["auto", "none", "lungs"], default="auto",
                        help="lungs: segment only the lungs' bounding box (+2 cm) found by thresholds (CT only); "
                             "auto (default): what the model's plan says (lungs for the lung-cpu preset), else none")
    add_progress_argument(parser, json_lines=True)
    parser.add_argument("--overwrite", action="store_true",
                        help="replace outputs of the same name already in --out (refused otherwise: it may be an "
                             "edited segmentation)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..files import output_lock
    from ..inference.inputs import find_inputs
    from ..inference.models import check_overlap, load_ensemble

    check_overlap(args.overlap)                      # before loading any checkpoint
    ensemble = load_ensemble(args.model, args.device)
    if ensemble.plan.get("task") == "correction":
        raise ValueError(f"{args.model[0].name} is a click-correction model; run it with 'diffumamba correct' or "
                         "'diffumamba serve' (docs/correction.md)")
    if len(ensemble.plan["channel_names"]) != 1:
        raise ValueError(f"the model takes {len(ensemble.plan['channel_names'])} input channels; predict segments "
                         "single-channel images (propagation models are run by 'diffumamba propagate')")
    cases = find_inputs(args.inputs, args.series_uid, ensemble.plan["channel_names"][0],
                        replace_nonfinite=args.replace_nonfinite)
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {args.out} is a file; give a folder (it is created if missing)")
    check_outputs(args, [name for name, _ in cases])
    created = not args.out.exists()
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _folder_error(args.out, err) from err
    try:
        with output_lock(args.out):                  # a second run into --out is refused, not mixed with ours
            failed = _predict_cases(args, ensemble, cases)
    finally:
        if created and not any(args.out.iterdir()):
            args.out.rmdir()                         # nothing written: leave no empty folder behind
    if failed:
        from ..user_errors import UserError

        others = f"; the other cases were written to {args.out}" if len(failed) < len(cases) else ""
        raise UserError(f"{len(failed)} of {len(cases)} case(s) failed: {', '.join(failed)} (reasons above){others}")
    return 0


def check_outputs(args: argparse.Namespace, names: list[str]) -> None:
    """Before any case is predicted: no output replaces an input file, and none replaces an existing file unless
    --overwrite (files.check_not_an_input, files.refuse_existing: the rules every command follows)."""
    from ..evaluation.images import case_id
    from ..files import check_not_an_input, refuse_existing
    from ..inference.outputs import output_paths

    inputs = [p for p in args.inputs if p.is_file()]
    inputs += [f for folder in args.inputs if folder.is_dir() for f in folder.iterdir() if f.is_file() and case_id(f)]
    planned = [path for name in names for path in output_paths(args.out, name, args.formats, args.probabilities,
                                                               args.uncertainty).values()]
    for path in planned:
        for source in inputs:
            check_not_an_input(path, {"the input": source}, "--out")
    if not args.overwrite:
        refuse_existing(planned, "--out", "--overwrite")


def _folder_error(folder: Path, err: OSError) -> OSError:
    """mkdir's errors name the deepest folder; say which --out could not be made and why."""
    from ..user_errors import describe
    from ..files import OutputError

    return OutputError(err.errno, f"cannot create --out {folder}: {describe(err)}")


def _predict_cases(args: argparse.Namespace, ensemble, cases) -> list[str]:
    """Segment and write every case; a user error or lack of memory fails that case only. Returns the failed."""
    from ..user_errors import describe, is_user_error
    from ..inference.lung_box import lung_box
    from ..inference.outputs import write_prediction
    from ..inference.predictor import predict_in_box
    from ..inference.progress import make_progress

    networks, plan, device = ensemble.networks, ensemble.plan, ensemble.device
    overlap, crop, label_names = ensemble.overlap(args.overlap), ensemble.crop(args.crop), ensemble.label_names
    progress = make_progress(args.progress)
    failed = []
    try:
        for index, (name, load) in enumerate(cases):
            def report(stage, fraction, message=name, index=index):
                progress.report(stage, (index + fraction) / len(cases), message)

            try:
                report("read", 0.0)
                case = load()
                data = _array(case.image)[None]
                spacing = tuple(reversed(case.image.GetSpacing()))
                box = lung_box(data[0], spacing) if crop == "lungs" else None
                if crop == "lungs" and box is None:
                    print(f"{name}: no lungs found; segmenting the whole image", file=sys.stderr)
                report("predict", 0.05)
                prediction = predict_in_box(box, data, networks=networks, plan=plan, spacing=spacing,
                                            overlap=overlap, device=device, mirror=args.tta,
                                            probabilities=args.probabilities, uncertainty=args.uncertainty,
                                            progress=lambda stage, f: report(stage, 0.05 + 0.85 * f))
                report("write", 0.9)
                written = write_prediction(case, prediction, args.out, args.formats, label_names,
                                           warn=lambda m: print(m, file=sys.stderr))
                report("done", 1.0)
            except Exception as err:
                if not is_user_error(err):
                    raise
                failed.append(name)
                print(f"{name}: FAILED: {describe(err)}", file=sys.stderr, flush=True)
                continue
            voxel_ml = _voxel_ml(case.image)
            volumes = ", ".join(f"{label_names[v]} {(prediction.labels == v).sum() * voxel_ml:.1f} ml"
                                for v in sorted(label_names) if v != 0)
            print(f"{name}: {volumes}; wrote {', '.join(p.name for p in written)}", file=sys.stdout, flush=True)
    finally:
        progress.close()
    return failed


def _voxel_ml(image) -> float:
    import math

    return math.prod(image.GetSpacing()) / 1000.0


def _array(image):
    import numpy as np
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(image).astype(np.float32)
