"""``diffumamba experiment``: several networks, same splits and budget, one comparison table."""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

from ..nets import NETWORK_NAMES
from .plan_options import add_plan_arguments, prepare_from_args
from .progress_option import shows_bars
from .train import add_training_arguments


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "experiment", help="compare networks over folds and seeds under one budget",
        description="Plan once, then train every network on every chosen fold and seed with the same splits, "
                    "training cases, patch, features and iterations; score each run's last checkpoint on its "
                    "fold's held-out cases on the original grid; print mean ± sd Dice and HD95 per network and "
                    "the paired difference to the baseline with its 95%% CI, per case or, with --group-pattern, per patient. Results go to "
                    "RESULTS/results.csv, table.md and summary.json; finished runs are reused when restarted.")
    add_plan_arguments(parser, network=False)
    parser.add_argument("--results", type=Path, required=True, help="experiment output folder")
    parser.add_argument("--networks", nargs="+", choices=NETWORK_NAMES, default=list(NETWORK_NAMES))
    from ..training.methods import METHOD_NAMES

    parser.add_argument("--methods", nargs="+", default=["supervised"], metavar="METHOD[:NAME=VALUE,...]",
                        help=f"training methods to compare ({', '.join(METHOD_NAMES)}); every network is trained "
                             "with every method. An ablation arm changes its method's settings, e.g. "
                             "diffcl:high_frequency_stages=0 or dale:confidence=none,align_weight=0. A Diff-CL arm "
                             "is also scored by its diffusion branch (ARM/diffusion) and the branches' mean (ARM/mean)")
    parser.add_argument("--baseline", help="the arm the others are compared with: a network name when only "
                                           "supervised training is compared, a method name when one network is, "
                                           "else NETWORK-METHOD (default: the first arm)")
    parser.add_argument("--fold-list", type=int, nargs="+", metavar="FOLD", help="folds to run (default: all)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    add_training_arguments(parser)
    parser.add_argument("--nsd-tolerance", type=float, default=2.0, metavar="MM")
    parser.add_argument("--table-only", action="store_true", help="print the table of the finished runs; train nothing")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..experiment.runner import ExperimentSpec, experiment_arms, experiment_rows, run_experiment, scored_names
    from ..experiment.dale_report import partition_lines
    from ..experiment.statistics import compare, markdown_table
    from ..files import atomic_write_text
    from ..training.splits import case_groups
    from .train import set_threads, training_settings

    set_threads(args.threads)
    if args.table_only:
        rows = experiment_rows(args.results)
        if not rows:
            raise FileNotFoundError(f"no finished run under {args.results}")
    else:
        prepared = prepare_from_args(args, args.networks[0])
        settings = training_settings(args, seed=0, validate_every=10**9, task=prepared.plan.task)
        training = {k: v for k, v in vars(settings).items() if k not in ("seed", "validate_every", "method")}
        if args.labeled:
            raise ValueError("experiment: --labeled names cases of one fold; use --labeled-fraction")
        baseline = args.baseline or experiment_arms(args.networks, args.methods)[0][0]
        spec = ExperimentSpec(networks=args.networks, baseline=baseline, n_folds=args.folds,
                              folds=args.fold_list if args.fold_list is not None else list(range(args.folds)),
                              seeds=args.seeds, train_fraction=args.train_fraction, group_pattern=args.group_pattern or prepared.dataset.meta.get("group_pattern"),
                              batch_size=args.batch_size or prepared.plan.batch_size,
                              nsd_tolerance_mm=args.nsd_tolerance, training=training, methods=args.methods,
                              labeled_fraction=args.labeled_fraction, corrupt_fraction=args.corrupt_fraction,
                              corrupt_voxels=args.corrupt_voxels, label_noise=args.label_noise,
                              labeled_unit=args.labeled_unit)
        plan = prepared.plan
        print(f"plan: patch {plan.patch_size}, spacing {plan.target_spacing}, features "
              f"{plan.network['features_per_stage']}, batch {spec.batch_size}")
        rows = run_experiment(prepared, spec, args.results, progress=shows_bars(args))
    recorded = json.loads((args.results / "experiment.json").read_text())["spec"]
    arms = scored_names(ExperimentSpec(**recorded).arms())
    baseline = recorded["baseline"]
    rows = sorted(rows, key=lambda row: arms.index(row["network"]))   # the order asked for
    group_pattern = recorded["group_pattern"]
    groups = case_groups(sorted({r["case"] for r in rows}), group_pattern) if group_pattern else None
    entries = compare(rows, baseline, groups)
    table = markdown_table(entries, baseline, "patients" if groups else "cases")
    partition = partition_lines(args.results)
    if partition:                        # DALE with corrupted labels: did its partition find them?
        table += "\nDALE partition:\n\n" + "".join(f"- {line}\n" for line in partition)
    atomic_write_text(args.results / "results.csv", _csv(rows))
    atomic_write_text(args.results / "summary.json", json.dumps(entries, indent=2) + "\n")
    atomic_write_text(args.results / "table.md", table)
    print(table, end="")
    print(f"per-case results: {args.results / 'results.csv'}")
    return 0


def _csv(rows: list[dict]) -> str:
    columns = ["network", "method", "fold", "seed", "case", "label", "dice", "hd95_mm", "assd_mm", "nsd", "band_dice",
               "ref_volume_ml", "pred_volume_ml", "ref_empty", "pred_empty", "train_seconds"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        row = {"method": "supervised", "band_dice": "", **row}   # rows of runs scored before these existed
        writer.writerow({k: (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]) for k in columns})
    return buffer.getvalue()
