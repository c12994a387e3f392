"""``diffumamba correct``: one correction of a mask by clicks and drawn slices, from the command line.

Its options, their checks and its report are shared with ``grow-from-seeds`` (``add_job_arguments``, ``read_job``,
``report``), which answers the same clicks file without a model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

MODEL_HELP = ("correction checkpoint(s) or model packages (.zip), ensembled (default: the built-in click lesion "
              "model, click-lesion-VERSION.zip: $DIFFUMAMBA_CLICK_MODEL, else the newest one installed; "
              "docs/correction.md)")


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "correct", help="correct a GTV mask with include/exclude clicks and hand-drawn slices (correction model)",
        description="Correct --mask on --image with the clicks (and fixed slices) in --clicks, using a model trained "
                    "with 'train --task correction' (by default the built-in click lesion model). Only the lesion's "
                    "box is re-segmented; the mask outside it and the fixed slices are kept exactly. Writes the "
                    "corrected mask on the image's grid to --output (.nii.gz, .nrrd or .seg.nrrd). Clicks JSON: "
                    "docs/correction.md. Each call loads the model and reads the CT again: for many clicks on one "
                    "image, 'diffumamba serve --stdio' does that once.")
    add_job_arguments(parser)
    add_model_arguments(parser)
    parser.set_defaults(run=run)


def add_job_arguments(parser, fixed_slices: bool = True) -> None:
    """The files of one correction: --image, --mask, --clicks, --output, --overwrite (``fixed_slices``: whether
    the clicks file may hold them)."""
    parser.add_argument("--image", type=Path, required=True, help="the scan: image file or DICOM series folder")
    parser.add_argument("--mask", type=Path, help="current mask: label map, .seg.nrrd, RTSTRUCT or DICOM SEG "
                                                  "(default: empty, e.g. one click in the tumour)")
    parser.add_argument("--clicks", type=Path, required=True,
                        help='JSON: {"coordinate_system": "LPS"|"RAS", "clicks": [{"point": [x, y, z], "label": '
                             '"include"|"exclude"}]' + (', "fixed_slices": [k, ...]}' if fixed_slices else '}'))
    parser.add_argument("--output", type=Path, required=True, help="corrected mask (.nii.gz, .nrrd or .seg.nrrd)")
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it already exists")


def add_model_arguments(parser) -> None:
    """--model (optional: the built-in click lesion model) and --device: what ``correct`` and ``serve`` load."""
    parser.add_argument("--model", type=Path, nargs="+", metavar="CHECKPOINT", help=MODEL_HELP)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])


def model_paths(models) -> list[Path]:
    """``--model``'s paths, or the built-in click lesion model's package (``builtin_models``) without it."""
    if models:
        return list(models)
    from ..builtin_models import builtin_model

    return [builtin_model("correction")]


def read_job(args: argparse.Namespace):
    """The ``CorrectJob`` of the options, checked before any image or model is read: the clicks file parses, the
    output is a mask file, never an input (``files.check_not_an_input``) and never an existing file without
    --overwrite (``files.refuse_existing``)."""
    from ..correction.request import CorrectJob, check_outputs, decode_json, parse_request
    from ..files import refuse_existing

    if not args.clicks.is_file():
        raise FileNotFoundError(f"clicks file does not exist: {args.clicks}")
    try:
        text = args.clicks.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{args.clicks}: not a UTF-8 JSON file ({err}); see docs/correction.md") from None
    job = CorrectJob(args.image, args.mask, args.output, parse_request(decode_json(text, str(args.clicks)),
                                                                       str(args.clicks)))
    check_outputs(job, options=True)
    if not args.overwrite:
        refuse_existing([args.output], "--output", "--overwrite")
    return job


def report(args: argparse.Namespace, done: dict) -> None:
    print(f"{args.image.name}: {done['clicks']} click(s), {len(done['fixed_slices'])} fixed slice(s) -> "
          f"{done['volume_ml']:.1f} ml ({done['changed_voxels']} voxels changed) in {done['seconds']:.2f} s; "
          f"wrote {args.output}")


def run(args: argparse.Namespace) -> int:
    from .correction_service import CorrectionService

    job = read_job(args)                             # before the model is loaded: an output never replaces an input
    service = CorrectionService(model_paths(args.model), args.device)
    report(args, service.correct(job, str(args.clicks)))
    return 0
