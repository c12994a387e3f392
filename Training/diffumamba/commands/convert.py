"""``diffumamba convert``: build an nnU-Net v2 raw dataset from image/label pairs or DICOM CT + RTSTRUCT."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "convert", help="build an nnU-Net v2 raw dataset (pairs of image/label files, or DICOM + RTSTRUCT)",
        description="Convert case by case into OUT/imagesTr, OUT/labelsTr and OUT/dataset.json. A case that fails "
                    "is reported by name with the reason and the others continue; the exit status is 1 when "
                    "any case failed (dataset.json then lists the converted cases only), 2 when none converted.")
    sources = parser.add_subparsers(dest="source_kind", required=True, metavar="SOURCE")

    pairs = sources.add_parser(
        "pairs", help="NIfTI/NRRD/MHA image and label files matched by pattern",
        description="Match image/label files under SOURCE by patterns in which {case} stands for the case id, "
                    "e.g. --pair '{case}_image.nrrd' '{case}_label.nrrd', or for case folders "
                    "--pair '{case}/Pre_Scan_T1.nii.gz' '{case}/Pre_Mask.nii.gz' '{case}_pre'.")
    pairs.add_argument("--pair", nargs="+", action="append", required=True, metavar="PATTERN",
                       help="IMAGE LABEL [NAME]: patterns relative to SOURCE and an optional case-name template "
                            "(default {case}); repeat for several pairs per case folder")
    pairs.add_argument("--modality", default="CT", help="channel name in dataset.json: CT or MR, ... (default CT)")
    pairs.add_argument("--labels", nargs="+", default=["GTV"], metavar="NAME",
                       help="names of the label values 1, 2, ... (default: GTV)")

    dicom = sources.add_parser(
        "dicom", help="case folders holding a DICOM CT series and an RTSTRUCT",
        description="Every CASE_FOLDER is one case, searched recursively for DICOM files. The CT "
                    "series is the one the RTSTRUCT references; the label is the union of the ROIs whose "
                    "name matches --roi (a case-insensitive regular expression matched against the whole "
                    "name), rasterised on the CT grid (voxel centres, even-odd rule).")
    dicom.add_argument("--roi", required=True, metavar="REGEX", help="ROI name or regular expression, e.g. 'GTV.*'")
    dicom.add_argument("--label", default="GTV", help="label name in dataset.json (default GTV)")

    pairs.add_argument("source", type=Path, help="folder holding the cases")
    dicom.add_argument("cases", type=Path, nargs="+", metavar="CASE_FOLDER",
                       help="one folder per case (e.g. a shell glob such as 'exports/LUNG1-*')")
    for sub in (pairs, dicom):
        sub.add_argument("out", type=Path, help="dataset folder to create, e.g. Dataset010_Lung")
        sub.add_argument("--file-ending", default=".nii.gz", choices=[".nii.gz", ".nrrd", ".mha"])
        mode = sub.add_mutually_exclusive_group()
        mode.add_argument("--overwrite", action="store_true", help="replace a dataset already in OUT")
        mode.add_argument("--append", action="store_true",
                          help="add cases to the dataset in OUT (same channels, labels and file ending)")
        sub.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..convert.run import ConversionReport, convert_cases
    from ..convert.writer import DatasetWriter

    report = ConversionReport()
    channels, labels = ([args.modality], args.labels) if args.source_kind == "pairs" else (["CT"], [args.label])
    writer = DatasetWriter(args.out, channels, labels, args.file_ending, overwrite=args.overwrite, append=args.append,
                           description=f"converted by diffumamba convert {args.source_kind}")
    cases = _pair_cases(args, report) if args.source_kind == "pairs" else _dicom_cases(args)
    for name, reason in report.failed:
        tqdm.write(f"{name}: FAILED: {reason}")
    convert_cases(cases, writer, report, progress=lambda items: tqdm(items, desc="convert", unit="case"),
                  warn=tqdm.write)
    if not report.converted:
        raise ValueError(f"no case converted ({len(report.failed)} failed)")
    path = writer.finish()
    print(f"converted {len(report.converted)} case(s) into {args.out} ({path.name} lists {len(writer.cases)})")
    if report.failed:
        print(f"{len(report.failed)} case(s) failed: " + ", ".join(name for name, _ in report.failed))
        return 1
    return 0


def _pair_cases(args, report):
    from ..convert.pairs import PairPattern, find_pairs
    from ..convert.run import SourceCase
    from ..evaluation.images import read_label_map

    patterns = []
    for items in args.pair:
        if len(items) not in (2, 3):
            raise ValueError(f"--pair takes IMAGE LABEL [NAME], got {len(items)} value(s)")
        patterns.append(PairPattern(*items))
    pairs, missing = find_pairs(args.source, patterns)
    report.failed.extend(missing)

    def loader(pair):
        def load():
            return [_read_image(pair.image)], read_label_map(pair.label)[0]
        return load

    return [SourceCase(p.name, loader(p)) for p in pairs]


def _dicom_cases(args):
    from ..convert.dicom import dicom_cases

    return dicom_cases(args.cases, args.roi)


def _read_image(path: Path):
    from ..imageio import read_scalar_image

    image = read_scalar_image(path, "give one file per channel")
    if image.GetDimension() != 3:
        raise ValueError(f"{path.name} is {image.GetDimension()}D; expected a 3D volume")
    return image
