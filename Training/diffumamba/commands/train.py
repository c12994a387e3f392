"""``diffumamba train``: plan, preprocess (cached) and train one network on one fold."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional

from .plan_options import add_plan_arguments, prepare_from_args
from .progress_option import shows_bars


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "train", help="train a network on an nnU-Net v2 raw dataset",
        description="Fingerprint, plan and preprocess the dataset (cached), make or reuse its k-fold splits "
                    "(splits_final.json beside dataset.json), and train. Checkpoints (last, best) and log.csv "
                    "go to --run-dir; --resume continues a killed run from its last checkpoint.")
    add_plan_arguments(parser)
    parser.add_argument("--run-dir", dest="run_dir", type=Path, required=True, help="output folder of this training run")
    parser.add_argument("--fold", default="0", help="fold index or 'all' (train and validate on every case)")
    from ..training.methods import METHOD_NAMES

    parser.add_argument("--method", default="supervised", choices=METHOD_NAMES,
                        help="training method: plain supervised; supervised-hf (supervised, with Diff-CL's "
                             "high-frequency module: its control); DALE (noisy labels in fuzzy regions) or Diff-CL "
                             "(semi-supervised; needs unlabelled cases, see --labeled-fraction)")
    add_training_arguments(parser)
    parser.add_argument("--validate-every", type=int, default=50, metavar="EPOCHS",
                        help="score the validation cases every EPOCHS epochs and after the last (0: never; then no best checkpoint)")
    parser.add_argument("--validate-cases", type=int, metavar="N",
                        help="score only a seeded N of the validation cases (a lesion dataset's fold holds hundreds)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init-from", type=Path, metavar="CHECKPOINT",
                        help="start from this checkpoint's network weights (fine-tuning; same network and plan); "
                             "a --resume continues from the run's own last checkpoint instead")
    parser.add_argument("--resume", action="store_true",
                        help="continue from RUN/last.safetensors (same network, features, method and seed)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start again in a --run-dir that already holds a run: its checkpoints, log and "
                             "TensorBoard events are replaced (without it such a folder is refused)")
    parser.add_argument("--replace-nonfinite", action="store_true",
                        help="replace NaN/Inf voxels of the training images with each image's minimum instead of "
                             "refusing the image")
    parser.set_defaults(run=run)


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``train`` and ``experiment``: splits, data budget and optimisation budget."""
    parser.add_argument("--folds", type=int, default=5, help="number of cross-validation folds (default 5)")
    parser.add_argument("--group-pattern", metavar="REGEX",
                        help="keep cases of one patient in one fold: a regex whose first matching group names the "
                             "patient, e.g. '^(\\d+)_' (used when the splits are first made; default: the dataset's "
                             "own 'group_pattern' in dataset.json, as 'convert lidc' writes it, else one case per "
                             "patient)")
    parser.add_argument("--train-fraction", type=float, default=1.0,
                        help="train on a seeded subset of the fold's training cases (e.g. 0.16)")
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--iterations", type=int, default=250, help="iterations per epoch")
    parser.add_argument("--lr", type=float, help="initial learning rate (default 1e-3 diffumamba, 1e-2 others)")
    parser.add_argument("--batch-size", type=int, help="default: the plan's")
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument("--spatial-aug", choices=["enlarged", "in-patch"], default="enlarged",
                        help="enlarged: rotate and scale a larger box around the patch and crop it back, in-plane "
                             "only for thin patches (nnU-Net's); in-patch: rotate the patch itself about every axis, "
                             "zero-padding its corners (the earlier default)")
    parser.add_argument("--elastic", action="store_true", help="add elastic deformation to the augmentation")
    parser.add_argument("--oversample", type=float, default=0.33, metavar="F",
                        help="fraction of each batch centred on foreground (default 0.33, nnU-Net's)")
    parser.add_argument("--hard-negatives", type=float, default=0.0, metavar="P",
                        help="full-CT models: chance of each patch not centred on foreground to be centred on soft "
                             "tissue (-100 to 200 HU) in the lungs' box, 10 mm or more from tumour: heart, mediastinum, "
                             "chest wall (default 0; see docs/lung_gtv_model.md)")
    parser.add_argument("--lung-region", action="store_true",
                        help="full-CT models: centre the random patches inside each CT's lung box (the part "
                             "'predict --crop lungs' segments) instead of anywhere in the volume")
    parser.add_argument("--case-weight", nargs=2, action="append", metavar=("REGEX", "FACTOR"),
                        help="draw the training cases whose name matches REGEX FACTOR times as often (repeatable), "
                             "e.g. a few whole-CT tumours among many pasted nodules")
    parser.add_argument("--dice", choices=["sample", "batch"], default="sample",
                        help="Dice of the loss per sample, or pooled over the batch (nnU-Net's batch_dice)")
    parser.add_argument("--residual-init", choices=["he", "zero"], default="he",
                        help="he: He init everywhere (the official networks'); zero: then zero each residual "
                             "block's last norm (as nnU-Net ResEnc) and the segmentation heads, so training starts "
                             "from logits 0")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, metavar="N",
                        help="CPU threads of PyTorch (default: PyTorch's, one per core); on a shared machine 1 may "
                             "be several times faster than 2")
    parser.add_argument("--prior-dropout", type=float, default=0.2, metavar="P",
                        help="propagation: probability of hiding the prior channels from a training patch, so the "
                             "model also works without a usable prior (default 0.2; 1.0 trains a no-prior model)")
    parser.add_argument("--prior-perturb", type=float, default=0.5, metavar="P",
                        help="propagation: probability of shifting, dilating or eroding the prior GTV channel of a "
                             "training patch, as registration and contouring errors do (default 0.5)")
    correction = parser.add_argument_group("correction (with --task correction; see docs/correction.md)")
    correction.add_argument("--correction-pseudo-objects", dest="correction__pseudo_objects", type=float,
                            metavar="P", help="probability of replacing a patch's label by a region grown from a "
                                              "random voxel, so the network follows clicks on any object (default 0)")
    correction.add_argument("--correction-off-centre", dest="correction__off_centre", action="store_const",
                            const=True, help="place the first click of an empty start anywhere in the tumour's inner "
                                             "half, not at its centre")
    add_method_arguments(parser)


def add_method_arguments(parser: argparse.ArgumentParser) -> None:
    """--method, the case roles (labelled / unlabelled / corrupted) and every DALE and Diff-CL setting."""
    from dataclasses import MISSING, fields

    from ..training.methods.settings import METHOD_SETTINGS

    parser.add_argument("--labeled-fraction", type=float, default=1.0,
                        help="semi-supervised: a seeded fraction of the fold's training cases keeps its labels, the "
                             "rest is unlabelled (Diff-CL learns from it; the other methods leave it out)")
    parser.add_argument("--labeled-unit", choices=("case", "patient"), default="case",
                        help="what --labeled-fraction counts: cases, or patients (every case of a chosen patient, "
                             "by the group pattern; default case)")
    parser.add_argument("--labeled", nargs="+", metavar="CASE", help="semi-supervised: the labelled training cases")
    parser.add_argument("--corrupt-fraction", type=float, default=0.0,
                        help="noisy-label experiments: corrupt the labels of this seeded fraction of the labelled "
                             "training cases (held-out cases stay clean)")
    parser.add_argument("--corrupt-voxels", type=int, default=3,
                        help="size of each corruption in voxels with --label-noise contour (default 3)")
    parser.add_argument("--label-noise", choices=("contour", "readers"), default="contour",
                        help="corruption model: contour (dilated, eroded or shifted by --corrupt-voxels) or readers "
                             "(dilated or eroded by 1-3 voxels, shifted by 1-2, a missed part, a merged vessel; "
                             "docs/methods.md)")
    for method, settings in METHOD_SETTINGS.items():
        group = parser.add_argument_group(f"{method} (with --method {method}; see docs/methods.md)")
        for item in fields(settings):
            default = item.default if item.default is not MISSING else None
            group.add_argument(f"--{method}-{item.name.replace('_', '-')}", dest=f"{method}__{item.name}",
                               type=type(default), metavar="X", help=f"{item.metadata['help']} (default {default})")


def method_options(args: argparse.Namespace) -> dict:
    """{method: {setting: value}} for the settings given on the command line."""
    options: dict = {}
    for key, value in vars(args).items():
        if "__" in key and value is not None:
            method, name = key.split("__", 1)
            options.setdefault(method, {})[name] = value
    return options


def training_settings(args: argparse.Namespace, seed: int, validate_every: int = 50, task: str = "segmentation"):
    from ..training.trainer import TrainSettings

    return TrainSettings(epochs=args.epochs, iterations_per_epoch=args.iterations, initial_lr=args.lr,
                         validate_every=validate_every, augment=not args.no_augment, elastic=args.elastic,
                         spatial_augmentation=args.spatial_aug,
                         oversample_foreground=args.oversample, batch_dice=args.dice == "batch",
                         zero_init_residual=args.residual_init == "zero",
                         seed=seed, device=args.device, prior_dropout=args.prior_dropout,
                         prior_perturb=args.prior_perturb, task=task, method=getattr(args, "method", "supervised"),
                         method_options=method_options(args), case_weights=parse_case_weights(args.case_weight),
                         hard_negative=args.hard_negatives, lung_region=args.lung_region)


def parse_case_weights(items) -> dict:
    """``--case-weight REGEX FACTOR`` pairs -> {regex: factor}, checked."""
    import re

    weights = {}
    for pattern, factor in items or []:
        try:
            re.compile(pattern)
            value = float(factor)
        except (re.error, ValueError) as err:
            raise ValueError(f"--case-weight {pattern} {factor}: {err}") from None
        if not value > 0 or value != value or value == float("inf"):
            raise ValueError(f"--case-weight {pattern} {factor}: the factor must be a positive number")
        weights[pattern] = value
    return weights


# What a training run writes into its folder (``--overwrite`` removes them before starting again).
RUN_FILES = ("last.safetensors", "best.safetensors", "log.csv", "cases.json", "dale_partition.json",
             "diffusion.safetensors")
RUN_FOLDERS = ("tensorboard",)


def existing_run_files(run_dir: Path) -> list[str]:
    return [name for name in (*RUN_FILES, *RUN_FOLDERS) if (run_dir / name).exists()]


def check_run_dir(args: argparse.Namespace) -> Optional[dict]:
    """Refuse what would mix two runs in one folder, before anything is read or written; returns the header of the
    checkpoint to resume (None for a new run)."""
    from ..checkpoint import load_checkpoint

    run_dir = args.run_dir
    if args.resume and args.overwrite:
        raise ValueError("--resume continues the run in --run-dir and --overwrite starts it again: give one of them")
    if not args.resume:
        found = existing_run_files(run_dir)
        if found and not args.overwrite:
            raise ValueError(f"{run_dir} already holds a training run ({', '.join(found)}): continue it with "
                             "--resume, train into a new --run-dir, or pass --overwrite to start it again")
        return None
    path = run_dir / "last.safetensors"
    if not path.exists():
        raise FileNotFoundError(f"--resume: no checkpoint at {path}")
    header = load_checkpoint(path)[0]
    saved_method = header.get("method", {}).get("name", "supervised")
    saved_seed = header.get("training", {}).get("settings", {}).get("seed")
    saved_network = header.get("network", {}).get("network")
    problem = None
    if saved_method != args.method:
        problem = f"was trained with --method {saved_method}, not {args.method}"
    elif saved_network != args.network:
        problem = (f"was trained with network {saved_network} features "
                   f"{header.get('network', {}).get('features_per_stage')}, not {args.network}")
    elif saved_seed is not None and saved_seed != args.seed:
        problem = f"was trained with --seed {saved_seed}, not --seed {args.seed}"
    if problem:
        raise ValueError(f"{run_dir} {problem}; resume with the same options or train into a new folder")
    return header


def run(args: argparse.Namespace) -> int:
    from ..data.dataset import replacing_nonfinite
    from ..files import atomic_write_text
    from ..training.hard_negatives import cases_for_sampling
    from ..training.case_roles import assign_roles, load_cases
    from ..training.sampling import TrainingCase
    from ..training.splits import fold_cases, load_or_create_splits, subset
    from ..training.trainer import Trainer

    if args.method == "diffcl" and args.labeled_fraction >= 1 and not args.labeled:
        raise ValueError("--method diffcl needs unlabelled cases: give --labeled-fraction below 1 or --labeled")
    # option mistakes are reported before the dataset is fingerprinted and preprocessed (minutes to hours)
    if args.validate_cases is not None and args.validate_cases < 1:
        raise ValueError("--validate-cases must be at least 1")
    parse_case_weights(args.case_weight)
    if args.init_from is not None and not args.init_from.is_file():
        raise ValueError(f"--init-from {args.init_from}: no such checkpoint file")
    header = check_run_dir(args)
    if header is not None:
        trained = header.get("training", {}).get("epoch", 0)
        if trained >= args.epochs:
            # Nothing to do is not an error: a resume loop around a finished run succeeds (exit 0), and says so.
            print(f"{args.run_dir} is complete: trained for {trained} epoch(s), --epochs {args.epochs}; "
                  f"nothing to do (resume with --epochs above {trained} to train longer)")
            return 0
    set_threads(args.threads)
    with replacing_nonfinite(args.replace_nonfinite):
        prepared = prepare_from_args(args, args.network)
    names = [c.name for c in prepared.cases]
    group_pattern = args.group_pattern or prepared.dataset.meta.get("group_pattern")
    if args.fold != "all":
        print("folds keep each patient's cases together: " + (f"group pattern {group_pattern!r}" + (
            "" if args.group_pattern else " (dataset.json)") if group_pattern else
            "every case is its own patient (give --group-pattern if a patient has several cases)"))
    splits = load_or_create_splits(args.dataset / "splits_final.json", names, args.folds,
                                   group_pattern=group_pattern) if args.fold != "all" else None
    train_names, val_names = fold_cases(splits, names, args.fold)
    if args.train_fraction < 1:
        train_names = subset(train_names, args.train_fraction, args.seed)
    if args.labeled_unit == "patient" and not group_pattern:
        raise ValueError("--labeled-unit patient needs a group pattern: give --group-pattern (dataset.json has none)")
    roles = assign_roles(train_names, args.seed, args.labeled_fraction, args.labeled, args.corrupt_fraction,
                         args.corrupt_voxels, args.label_noise,
                         group_pattern if args.labeled_unit == "patient" else None)
    if args.method == "diffcl" and not roles.unlabeled:
        raise ValueError("--method diffcl needs unlabelled cases: give --labeled-fraction below 1 or --labeled")
    cases = {"fold": args.fold, "train_fraction": args.train_fraction, "seed": args.seed, "train": train_names,
             "val": val_names, "method": args.method, **roles.to_dict()}
    if header is not None:
        saved = header.get("cases", {})
        now = {"fold": args.fold, "train": train_names, "val": val_names, **roles.to_dict()}
        different = sorted(k for k in now if k in saved and saved[k] != now[k])
        if different:
            raise ValueError(f"{args.run_dir} was trained on other cases ({', '.join(different)} differ: another "
                             "--fold, --train-fraction, --labeled or --corrupt option?); resume with the same options "
                             "or train into a new folder")
    plan = prepared.plan
    meta = {**plan.checkpoint_meta(), "cases": {"fold": args.fold, "train": train_names, "val": val_names,
                                                **roles.to_dict()}}
    labelled, unlabelled = load_cases(prepared.folder, roles, args.seed, with_unlabeled=args.method == "diffcl")
    labelled = cases_for_sampling(labelled, args.hard_negatives, args.lung_region, plan, args.seed)
    if args.validate_cases is not None:
        val_names = subset(val_names, min(1.0, args.validate_cases / max(1, len(val_names))), args.seed)
    validator = None
    if plan.task == "correction" and args.validate_every > 0:
        from dataclasses import asdict

        from ..correction.validation import CorrectionValidation

        raw = {case.name: case for case in prepared.cases}
        validator = CorrectionValidation([raw[n] for n in val_names], asdict(plan))
    trainer = Trainer(plan.network_config(), labelled,
                      [TrainingCase.from_cache(prepared.folder, n, args.seed) for n in val_names],
                      args.run_dir, training_settings(args, args.seed, args.validate_every, plan.task),
                      batch_size=args.batch_size or plan.batch_size, meta=meta, unlabeled_cases=unlabelled,
                      validator=validator)
    if args.init_from is not None and not args.resume:
        trainer.init_weights(args.init_from)
        print(f"initialised from {args.init_from}")
    if args.resume:
        trainer.resume()          # refuses another network config or seed before anything is written
        print(f"resuming after epoch {trainer.start_epoch}")
    elif args.overwrite and trainer.rank == 0:
        removed = remove_run_files(args.run_dir)
        if removed:
            print(f"--overwrite: removed {', '.join(removed)} from {args.run_dir}")
    args.run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.run_dir / "cases.json", json.dumps(cases, indent=2) + "\n")
    task = "" if plan.task == "segmentation" else f", {plan.task} task"
    print(f"training {plan.network['network']} ({args.method}{task}) on {len(labelled)} labelled case(s)"
          f"{f' ({len(roles.corrupted)} corrupted)' if roles.corrupted else ''}"
          f"{f' and {len(unlabelled)} unlabelled' if unlabelled else ''}, validating on {len(val_names)}; "
          f"patch {plan.patch_size}, lr {trainer.lr:g}, device {trainer.device}")
    trainer.fit(progress=shows_bars(args))
    print(f"checkpoints and log: {args.run_dir}")
    return 0


def set_threads(threads: Optional[int]) -> None:
    """``--threads``: PyTorch's intra-op threads (the process's own; other libraries keep their defaults)."""
    if threads is None:
        return
    if threads < 1:
        raise ValueError("--threads must be at least 1")
    import torch

    torch.set_num_threads(threads)


def remove_run_files(run_dir: Path) -> list[str]:
    """Delete what an earlier run wrote into ``run_dir`` (``--overwrite``); other files are left alone."""
    import shutil

    removed = existing_run_files(run_dir)
    for name in removed:
        path = run_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return removed
