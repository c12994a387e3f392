"""``diffumamba correct``: one correction of a mask by clicks and drawn slices, from the command line."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "correct", help="correct a GTV mask with include/exclude clicks and hand-drawn slices (correction model)",
        description="Correct --mask on --image with the clicks (and fixed slices) in --clicks, using a model trained "
                    "with 'train --task correction'. Only the lesion's box is re-segmented; the mask outside it and "
                    "the fixed slices are kept exactly. Writes the corrected mask on the image's grid to --output "
                    "(.nii.gz, .nrrd or .seg.nrrd). Clicks JSON: docs/correction.md. For many clicks on one image, "
                    "'diffumamba serve --stdio' loads the model and the image once.")
    parser.add_argument("--image", type=Path, required=True, help="the scan: image file or DICOM series folder")
    parser.add_argument("--mask", type=Path, help="current mask: label map, .seg.nrrd, RTSTRUCT or DICOM SEG "
                                                  "(default: empty, e.g. one click in the tumour)")
    parser.add_argument("--clicks", type=Path, required=True,
                        help='JSON: {"coordinate_system": "LPS"|"RAS", "clicks": [{"point": [x, y, z], "label": '
                             '"include"|"exclude"}], "fixed_slices": [k, ...]}')
    parser.add_argument("--model", type=Path, nargs="+", required=True, metavar="CHECKPOINT",
                        help="correction checkpoint(s) or model packages (.zip), ensembled")
    parser.add_argument("--output", type=Path, required=True, help="corrected mask (.nii.gz, .nrrd or .seg.nrrd)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..correction.request import CorrectJob, check_outputs, decode_json, parse_request
    from .correction_service import CorrectionService

    if not args.clicks.is_file():
        raise FileNotFoundError(f"clicks file does not exist: {args.clicks}")
    try:
        text = args.clicks.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{args.clicks}: not a UTF-8 JSON file ({err}); see docs/correction.md") from None
    job = CorrectJob(args.image, args.mask, args.output, parse_request(decode_json(text, str(args.clicks)),
                                                                       str(args.clicks)))
    check_outputs(job, options=True)                 # before the model is loaded: an output never replaces an input
    service = CorrectionService(args.model, args.device)
    done = service.correct(job, str(args.clicks))
    print(f"{args.image.name}: {done['clicks']} click(s), {len(done['fixed_slices'])} fixed slice(s) -> "
          f"{done['volume_ml']:.1f} ml ({done['changed_voxels']} voxels changed) in {done['seconds']:.2f} s; "
          f"wrote {args.output}")
    return 0
