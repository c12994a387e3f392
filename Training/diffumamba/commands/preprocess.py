"""``diffumamba preprocess``: fingerprint a dataset, plan the experiment and cache the preprocessed cases."""

from __future__ import annotations

import argparse

from .plan_options import add_plan_arguments, prepare_from_args


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "preprocess", help="fingerprint, plan and preprocess an nnU-Net v2 raw dataset",
        description="Read an nnU-Net v2 raw dataset, compute its fingerprint, plan target spacing, patch size "
                    "and network, and cache the cropped, normalised, resampled cases under OUT/plan_<hash>/. "
                    "Cases already cached for the same plan are skipped.")
    add_plan_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    prepared = prepare_from_args(args, args.network)
    plan = prepared.plan
    print(f"target spacing {plan.target_spacing} mm, patch {plan.patch_size}, batch {plan.batch_size}, "
          f"{plan.network_config().n_stages} stages")
    print(f"{prepared.computed} case(s) preprocessed, {len(prepared.cases) - prepared.computed} already cached")
    print(f"fingerprint: {prepared.fingerprint_file}")
    print(f"plan and cases: {prepared.folder}")
    return 0
