"""``diffumamba export``: a label map on a DICOM CT's grid -> DICOM RTSTRUCT / SEG referencing that series.

What an edited segmentation needs on its way to the planning system: the Slicer module writes the
reviewed segmentation as a label map on the CT grid and this command turns it into DICOM objects that
reference the original CT (its study, series, instances and frame of reference).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

DICOM_FORMATS = ("rtstruct", "dicom-seg")


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "export", help="label map on a DICOM CT grid -> DICOM RTSTRUCT and/or DICOM SEG referencing the CT",
        description="LABEL_MAP (NIfTI/NRRD/MHA) must lie exactly on the grid of the --reference DICOM series (as "
                    "predict, propagate and Slicer's label map export write it); label values are named by --names "
                    "(value 1, 2, ...). Outputs NAME_rtstruct.dcm / NAME_seg.dcm in --out, written atomically.")
    parser.add_argument("label_map", type=Path, metavar="LABEL_MAP")
    parser.add_argument("--reference", type=Path, required=True, help="folder of the DICOM CT series it was drawn on")
    parser.add_argument("--series-uid", help="the series when the folder holds several")
    parser.add_argument("--names", nargs="+", default=["GTV"], help="names of the label values 1, 2, ... (default GTV)")
    parser.add_argument("--format", nargs="+", choices=DICOM_FORMATS, default=list(DICOM_FORMATS), dest="formats")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--name", help="output file name stem (default: the label map's name)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..evaluation.images import case_id, read_label_map
    from ..geometry import grid_differences
    from ..inference.inputs import find_inputs
    from ..inference.outputs import write_prediction
    from ..inference.predictor import Prediction

    if not args.label_map.is_file():
        raise FileNotFoundError(f"label map does not exist: {args.label_map}")
    image, labels = read_label_map(args.label_map)
    cases = find_inputs([args.reference], args.series_uid)
    if len(cases) != 1 or not args.reference.is_dir():
        raise ValueError(f"--reference must be one DICOM series folder, got {args.reference}")
    case = cases[0][1]()
    if case.slices is None:
        raise ValueError(f"{args.reference} holds no DICOM image series")
    differences = grid_differences(image, case.image)
    if differences:
        raise ValueError(f"{args.label_map.name} is not on the grid of the DICOM series ({'; '.join(differences)}); "
                         "export it on the CT's grid")
    values = sorted(int(v) for v in np.unique(labels) if v != 0)
    if not values:
        raise ValueError(f"{args.label_map.name} is empty: neither RTSTRUCT nor SEG can hold an empty structure")
    if values[-1] > len(args.names) or values[0] < 1:
        raise ValueError(f"{args.label_map.name} has labels {values}; --names names only 1..{len(args.names)}")
    names = {0: "background", **{i + 1: n for i, n in enumerate(args.names)}}
    case.name = args.name or case_id(args.label_map) or args.label_map.name.split(".")[0]
    args.out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(record=True) as caught:      # e.g. sub-voxel islands left out of the RTSTRUCT
        warnings.simplefilter("always", UserWarning)
        written = write_prediction(case, Prediction(labels.astype(np.uint8)), args.out, args.formats, names,
                                   warn=lambda m: print(m, file=sys.stderr))
    for warning in caught:
        if issubclass(warning.category, UserWarning) and "sub-voxel" in str(warning.message):
            print(f"warning: {warning.message}", file=sys.stderr)
    print(f"wrote {', '.join(str(p) for p in written)}")
    return 0
