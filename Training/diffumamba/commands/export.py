"""``diffumamba export``: label maps on a DICOM CT's grid -> DICOM RTSTRUCT / SEG referencing that series.

What an edited segmentation needs on its way to the planning system: the Slicer module writes the
reviewed segmentation on the CT grid and this command turns it into DICOM objects that reference the original
CT (its study, series, instances and frame of reference).

One LABEL_MAP: its values 1, 2, ... are the structures named by --names (structures cannot overlap). Several
LABEL_MAPs: each is one binary mask (every non-zero voxel) named by the --names entry at the same position, so
structures may overlap and each keeps all its voxels (RTSTRUCT: one ROI per mask; DICOM SEG: one segment per
mask, overlapping segments as SEG allows). An empty mask is left out with a warning (neither object can hold
an empty structure).
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
                    "predict, propagate and Slicer's label map export write it). One LABEL_MAP: label values are "
                    "named by --names (value 1, 2, ...). Several: each is one binary mask named by the --names entry "
                    "at its position (structures may overlap). Outputs NAME_rtstruct.dcm / NAME_seg.dcm in --out, "
                    "written atomically.")
    parser.add_argument("label_maps", type=Path, nargs="+", metavar="LABEL_MAP")
    parser.add_argument("--reference", type=Path, required=True, help="folder of the DICOM CT series it was drawn on")
    parser.add_argument("--series-uid", help="the series when the folder holds several")
    parser.add_argument("--names", nargs="+", default=["GTV"], help="names of the label values 1, 2, ... (default GTV)")
    parser.add_argument("--format", nargs="+", choices=DICOM_FORMATS, default=list(DICOM_FORMATS), dest="formats")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--name", help="output file name stem (default: the label map's name)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..evaluation.images import case_id
    from ..inference.inputs import find_inputs

    for path in args.label_maps:
        if not path.is_file():
            raise FileNotFoundError(f"label map does not exist: {path}")
    cases = find_inputs([args.reference], args.series_uid)
    if len(cases) != 1 or not args.reference.is_dir():
        raise ValueError(f"--reference must be one DICOM series folder, got {args.reference}")
    case = cases[0][1]()
    if case.slices is None:
        raise ValueError(f"{args.reference} holds no DICOM image series")
    first = args.label_maps[0]
    case.name = args.name or case_id(first) or first.name.split(".")[0]
    with warnings.catch_warnings(record=True) as caught:      # e.g. sub-voxel islands left out of the RTSTRUCT
        warnings.simplefilter("always", UserWarning)
        if len(args.label_maps) == 1:
            written = _one_label_map(args, case)
        else:
            written = _several_masks(args, case)
    for warning in caught:
        if issubclass(warning.category, UserWarning) and "sub-voxel" in str(warning.message):
            print(f"warning: {warning.message}", file=sys.stderr)
    print(f"wrote {', '.join(str(p) for p in written)}")
    return 0


def _on_grid(path: Path, case):
    from ..mask_io import read_label_map
    from ..geometry import grid_differences

    image, labels = read_label_map(path)
    differences = grid_differences(image, case.image)
    if differences:
        raise ValueError(f"{path.name} is not on the grid of the DICOM series ({'; '.join(differences)}); "
                         "export it on the CT's grid")
    return labels


def _one_label_map(args, case) -> list:
    import numpy as np

    from ..inference.outputs import write_prediction
    from ..inference.predictor import Prediction

    path = args.label_maps[0]
    labels = _on_grid(path, case)
    values = sorted(int(v) for v in np.unique(labels) if v != 0)
    if not values:
        raise ValueError(f"{path.name} is empty: neither RTSTRUCT nor SEG can hold an empty structure")
    if values[-1] > len(args.names) or values[0] < 1:
        raise ValueError(f"{path.name} has labels {values}; --names names only 1..{len(args.names)}")
    names = {0: "background", **{i + 1: n for i, n in enumerate(args.names)}}
    args.out.mkdir(parents=True, exist_ok=True)          # only once the input is known to be good
    return write_prediction(case, Prediction(labels.astype(np.uint8)), args.out, args.formats, names,
                            warn=lambda m: print(m, file=sys.stderr))


def _several_masks(args, case) -> list:
    from ..inference.outputs import write_dicom_masks

    if len(args.names) != len(args.label_maps):
        raise ValueError(f"{len(args.label_maps)} masks but {len(args.names)} --names: give one name per mask")
    masks = [(name, _on_grid(path, case) != 0) for name, path in zip(args.names, args.label_maps)]
    if not any(mask.any() for _name, mask in masks):
        raise ValueError("every mask is empty: neither RTSTRUCT nor SEG can hold an empty structure")
    args.out.mkdir(parents=True, exist_ok=True)          # only once the input is known to be good
    return write_dicom_masks(case, masks, args.out, args.formats, warn=lambda m: print(f"warning: {m}",
                                                                                        file=sys.stderr))
