"""``diffumamba predict``: segment DICOM series or image files with one or more checkpoints."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..inference.outputs import FORMATS


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "predict", help="segment images with trained checkpoints",
        description="Each INPUT is a DICOM series folder, an image file (NIfTI, NRRD, MHA) or a folder of image "
                    "files. Several --model checkpoints are ensembled (probabilities averaged). Outputs lie exactly "
                    "on the input grid; DICOM SEG and RTSTRUCT reference the input series. Exit 1 if a case failed "
                    "(the others are still written), 2 for bad options or models.")
    parser.add_argument("inputs", type=Path, nargs="+", metavar="INPUT")
    parser.add_argument("--model", type=Path, nargs="+", required=True, metavar="CHECKPOINT",
                        help="one or more .safetensors checkpoints of one plan (e.g. the 5 folds)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--format", nargs="+", choices=FORMATS, default=["nifti"], dest="formats",
                        help="output formats (default nifti); dicom-seg and rtstruct need a DICOM input")
    parser.add_argument("--series-uid", help="the series to segment when a DICOM folder holds several")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--tta", action="store_true", help="average over the 8 mirrorings (8x slower)")
    parser.add_argument("--overlap", type=float,
                        help="sliding-window overlap (default: the model's, e.g. 0.25 for the lung-cpu preset, else 0.5)")
    parser.add_argument("--probabilities", action="store_true", help="also write the class probabilities")
    parser.add_argument("--uncertainty", action="store_true",
                        help="also write the fraction of ensemble/TTA members disagreeing with the result")
    parser.add_argument("--crop", choices=["auto", "none", "lungs"], default="auto",
                        help="lungs: segment only the lungs' bounding box (+2 cm) found by thresholds (CT only); "
                             "auto (default): what the model's plan says (lungs for the lung-cpu preset), else none")
    parser.add_argument("--progress", choices=["bar", "json", "none"], default="bar",
                        help="json: one JSON line per step on stderr for GUIs")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..inference.inputs import find_inputs
    from ..inference.lung_box import lung_box
    from ..inference.models import check_overlap, load_ensemble
    from ..inference.outputs import write_prediction
    from ..inference.predictor import predict_in_box
    from ..inference.progress import make_progress

    check_overlap(args.overlap)                      # before loading any checkpoint
    ensemble = load_ensemble(args.model, args.device)
    networks, plan, device = ensemble.networks, ensemble.plan, ensemble.device
    if len(plan["channel_names"]) != 1:
        raise ValueError(f"the model takes {len(plan['channel_names'])} input channels; predict segments "
                         "single-channel images (propagation models are run by 'diffumamba propagate')")
    overlap, crop, label_names = ensemble.overlap(args.overlap), ensemble.crop(args.crop), ensemble.label_names
    cases = find_inputs(args.inputs, args.series_uid, plan["channel_names"][0])
    args.out.mkdir(parents=True, exist_ok=True)
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
            except (ValueError, RuntimeError, OSError) as err:
                failed.append(name)
                print(f"{name}: FAILED: {err}", file=sys.stderr)
                continue
            voxel_ml = _voxel_ml(case.image)
            volumes = ", ".join(f"{label_names[v]} {(prediction.labels == v).sum() * voxel_ml:.1f} ml"
                                for v in sorted(label_names) if v != 0)
            print(f"{name}: {volumes}; wrote {', '.join(p.name for p in written)}", file=sys.stdout, flush=True)
    finally:
        progress.close()
    if failed and len(failed) == len(cases):
        raise ValueError(f"no case could be segmented ({', '.join(failed)})")
    return 1 if failed else 0


def _voxel_ml(image) -> float:
    import math

    return math.prod(image.GetSpacing()) / 1000.0


def _array(image):
    import numpy as np
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(image).astype(np.float32)
