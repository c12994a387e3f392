"""``diffumamba convert``: build an nnU-Net v2 raw dataset from image/label pairs, DICOM CT + RTSTRUCT, or
(for propagation models) longitudinal pairs and simulated follow-ups."""

from __future__ import annotations

import argparse
from pathlib import Path

from .registration_options import add_registration_arguments, registration_settings
from .progress_option import add_progress_argument, case_bar


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

    longitudinal = sources.add_parser(
        "longitudinal", help="propagation training cases from prior/current visit pairs with a GTV at both",
        description="Every pair becomes one propagation case: channels current scan, prior scan registered onto it, "
                    "prior GTV registered onto it (registered exactly as 'propagate' does), label the current "
                    "GTV. Patterns as in 'convert pairs', e.g. --pair '{case}/Pre_Scan_T1.nii.gz' "
                    "'{case}/Pre_Mask.nii.gz' '{case}/Post_Scan_T1.nii.gz' '{case}/Post_Mask.nii.gz'.")
    longitudinal.add_argument("--pair", nargs="+", action="append", required=True, metavar="PATTERN",
                              help="PRIOR_IMAGE PRIOR_LABEL CURRENT_IMAGE CURRENT_LABEL [NAME]")
    longitudinal.add_argument("--modality", default="CT", help="CT or MR, ... (default CT)")
    longitudinal.add_argument("--both-directions", action="store_true",
                              help="also add every pair reversed (current as prior), named NAME_reverse")
    simulate = sources.add_parser(
        "simulate", help="propagation training cases simulated from a segmentation dataset's single time points",
        description="Each case of DATASET (an nnU-Net raw dataset with one channel) becomes the prior of "
                    "--per-case simulated follow-ups: smooth random deformation with breathing and a rigid "
                    "shift, tumour growth or shrinkage, intensity and noise changes. Each follow-up is then "
                    "registered back like a real pair (or, with --true-transform, warped with the known one).")
    simulate.add_argument("--per-case", type=int, default=2, help="follow-ups per case (default 2)")
    simulate.add_argument("--seed", type=int, default=0, help="of the simulation (default 0)")
    simulate.add_argument("--true-transform", action="store_true",
                          help="use the simulated deformation instead of registering (a perfect registration)")
    for sub in (longitudinal, simulate):
        add_registration_arguments(sub)

    lidc = sources.add_parser(
        "lidc", help="LIDC-IDRI nodule crops (lidc_idri_nodule_vois), as they are or pasted into whole chest CTs",
        description="Every crop of the folder (image/, mask/, metadata.csv) becomes a case named after its patient "
                    "and nodule (LIDC-IDRI-0001_n1); dataset.json records the pattern that keeps a patient's cases "
                    "in one fold. With --host, each crop's lesion is pasted into the hosts' lungs instead "
                    "(parenchyma or pleura, scaled 0.8-1.25, imaged at the host's slice thickness or the host on "
                    "the lesion's slices; see docs/data.md) and the case is the --box-mm box around it.")
    lidc.add_argument("source", type=Path, help="the lidc_idri_nodule_vois folder")
    lidc.add_argument("--host", nargs="+", action="append", metavar="CT",
                      help="CT [TUMOUR]: a chest CT (image file or DICOM series folder) to paste into, and its tumour "
                           "to keep away from (a label map on its grid, or a Lung-PET-CT-Dx boxes.json); repeat")
    lidc.add_argument("--host-dataset", type=Path, action="append", metavar="DATASET",
                      help="every case of a raw dataset as a host, its label as the tumour to keep away from")
    lidc.add_argument("--pastes", type=int, default=1, help="cases per crop, each pasted anew (default 1)")
    lidc.add_argument("--box-mm", type=float, default=80.0, help="side of a pasted case's box (default 80 mm)")
    lidc.add_argument("--seed", type=int, default=0, help="of the placements (default 0)")
    lidc.add_argument("--whole-ct", type=int, metavar="N",
                      help="full-CT cases instead: each host CT --pastes times, each copy with N lesions pasted into "
                           "the whole CT (scaled 1-2x), its label the host's tumour plus the lesions (label 'GTV', "
                           "cases HOST_wK, grouped by host); a boxes.json host is cut to the slabs 20 mm or more "
                           "from its boxed slices (HOST_wKzJ), so no unlabelled tumour is background")
    lidc.add_argument("--min-diameter", type=float, default=0.0, metavar="MM",
                      help="only crops whose metadata diameter is at least MM (e.g. 10 for GTV-like lesions)")
    pairs.add_argument("source", type=Path, help="folder holding the cases")
    longitudinal.add_argument("source", type=Path, help="folder holding the cases")
    simulate.add_argument("dataset", type=Path, help="nnU-Net raw dataset folder (imagesTr, labelsTr, dataset.json)")
    dicom.add_argument("cases", type=Path, nargs="+", metavar="CASE_FOLDER",
                       help="one folder per case (e.g. a shell glob such as 'exports/LUNG1-*')")
    for sub in (pairs, dicom, longitudinal, simulate, lidc):
        sub.add_argument("out", type=Path, help="dataset folder to create, e.g. Dataset010_Lung")
        sub.add_argument("--file-ending", default=".nii.gz", choices=[".nii.gz", ".nrrd", ".mha"])
        mode = sub.add_mutually_exclusive_group()
        mode.add_argument("--overwrite", action="store_true", help="replace a dataset already in OUT")
        mode.add_argument("--append", action="store_true",
                          help="add cases to the dataset in OUT (same channels, labels and file ending)")
        add_progress_argument(sub)
        sub.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..convert.run import ConversionReport, replaces_a_dataset
    from ..files import output_lock

    report = ConversionReport()
    cases, channels, labels, task = _CASES[args.source_kind](args, report)
    # --overwrite builds the new dataset in a sibling folder and swaps it in only once it has cases, so a
    # conversion where every case fails (or Ctrl-C) leaves the old dataset as it was.
    aside = args.overwrite and replaces_a_dataset(args.out)
    created = not args.out.exists()
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        with output_lock(args.out, "dataset folder"):   # two conversions into one dataset never mix
            return _convert(args, report, cases, channels, labels, task, aside)
    finally:
        if created and args.out.is_dir() and not any(args.out.iterdir()):
            args.out.rmdir()


def _convert(args, report, cases, channels, labels, task, aside) -> int:
    from tqdm import tqdm

    from ..convert.run import build_aside, convert_cases
    from ..convert.writer import DatasetWriter

    with build_aside(args.out) if aside else _nothing(args.out) as target:
        writer = DatasetWriter(target.folder, channels, labels, args.file_ending, overwrite=args.overwrite,
                               append=args.append, description=f"converted by diffumamba convert {args.source_kind}",
                               task=task, group_pattern=getattr(args, "dataset_group_pattern", None))
        for name, reason in report.failed:
            tqdm.write(f"{name}: FAILED: {reason}")
        convert_cases(cases, writer, report, progress=case_bar(args, "convert"),
                      warn=tqdm.write)
        if not report.converted:
            kept = f"; the dataset already in {args.out} was left as it was" if aside else ""
            raise ValueError(f"no case converted ({len(report.failed)} failed){kept}")
        writer.finish()
        target.commit()
    path = args.out / "dataset.json"
    print(f"converted {len(report.converted)} case(s) into {args.out} ({path.name} lists {len(writer.cases)})")
    if report.failed:
        print(f"{len(report.failed)} case(s) failed: " + ", ".join(name for name, _ in report.failed))
        return 1
    return 0


class _nothing:
    """The target of a conversion written in place (no dataset to replace)."""

    def __init__(self, folder: Path):
        self.folder = folder

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def commit(self) -> None:
        pass


def _pair_cases(args, report):
    """Cases, channel names, label names and task of 'convert pairs'."""
    from ..convert.pairs import PairPattern, find_pairs
    from ..convert.run import SourceCase
    from ..mask_io import read_label_map

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

    return [SourceCase(p.name, loader(p)) for p in pairs], [args.modality], args.labels, "segmentation"


def _dicom_cases(args, report):
    from ..convert.dicom import dicom_cases

    return dicom_cases(args.cases, args.roi), ["CT"], [args.label], "segmentation"


def _longitudinal_cases(args, report):
    from ..convert.longitudinal import longitudinal_cases, propagation_channels

    cases = []
    for items in args.pair:
        if len(items) not in (4, 5):
            raise ValueError(f"--pair takes PRIOR_IMAGE PRIOR_LABEL CURRENT_IMAGE CURRENT_LABEL [NAME], "
                             f"got {len(items)} value(s)")
        found, problems = longitudinal_cases(args.source, tuple(items[:4]), items[4] if len(items) == 5 else "{case}",
                                             registration_settings(args), args.both_directions)
        cases += found
        report.failed.extend(problems)
    return cases, propagation_channels(args.modality), ["GTV"], "propagation"


def _simulated_cases(args, report):
    from ..convert.longitudinal import propagation_channels, simulated_cases

    if args.per_case < 1:
        raise ValueError("--per-case must be at least 1")
    cases, modality = simulated_cases(args.dataset, args.per_case, registration_settings(args), args.seed,
                                      args.true_transform)
    return cases, propagation_channels(modality), ["GTV"], "propagation"


def _lidc_cases(args, report):
    from ..convert.lidc_vois import GROUP_PATTERN, crop_cases, pasted_cases, read_host, read_voi_folder
    from ..data.dataset import RawDataset
    from ..data.lesion_pasting import Host

    vois = [v for v in read_voi_folder(args.source) if v.diameter_mm >= args.min_diameter]
    if not vois:
        raise ValueError(f"no crop in {args.source} has a diameter of {args.min_diameter:g} mm or more")
    args.dataset_group_pattern = GROUP_PATTERN
    specs = []
    for items in args.host or []:
        if len(items) not in (1, 2):
            raise ValueError(f"--host takes CT [TUMOUR], got {len(items)} value(s)")
        specs.append((Path(items[0]), Path(items[1]) if len(items) == 2 else None, None))
    for dataset in args.host_dataset or []:
        specs += [(case.images[0], case.label, case.name) for case in RawDataset(dataset).training_cases()]
    if not specs:
        return crop_cases(vois), ["CT"], ["lesion"], "segmentation"
    if args.pastes < 1:
        raise ValueError("--pastes must be at least 1")
    if args.whole_ct is not None:
        from ..convert.whole_ct_cases import WHOLE_CT_GROUP_PATTERN, whole_ct_cases

        if args.whole_ct < 1:
            raise ValueError("--whole-ct must be at least 1")
        args.dataset_group_pattern = WHOLE_CT_GROUP_PATTERN
        return whole_ct_cases(vois, specs, args.whole_ct, args.pastes, args.seed), ["CT"], ["GTV"], "segmentation"
    hosts = []
    for path, avoid, _ in case_bar(args, "hosts (lungs)", "CT")(specs):
        name, image, tumour = read_host(path, avoid)
        host = Host.from_image(image, name, tumour)
        if not host.lung.any():
            raise ValueError(f"{path}: no lungs found (no enclosed air of 50 ml or more); is it a chest CT?")
        hosts.append(host)
    return pasted_cases(vois, hosts, args.pastes, args.seed, args.box_mm), ["CT"], ["lesion"], "segmentation"


_CASES = {"lidc": _lidc_cases, "pairs": _pair_cases, "dicom": _dicom_cases, "longitudinal": _longitudinal_cases,
          "simulate": _simulated_cases}


def _read_image(path: Path):
    from ..imageio import read_scalar_image

    image = read_scalar_image(path, "give one file per channel")
    if image.GetDimension() != 3:
        raise ValueError(f"{path.name} is {image.GetDimension()}D; expected a 3D volume")
    return image
