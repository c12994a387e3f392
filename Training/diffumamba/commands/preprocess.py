"""``diffumamba preprocess``: fingerprint a dataset, plan the experiment and cache the preprocessed cases."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..nets import NETWORK_NAMES


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "preprocess", help="fingerprint, plan and preprocess an nnU-Net v2 raw dataset",
        description="Read an nnU-Net v2 raw dataset, compute its fingerprint, plan target spacing, patch size "
                    "and network, and cache the cropped, normalised, resampled cases under OUT/plan_<hash>/. "
                    "Cases already cached for the same plan are skipped.")
    parser.add_argument("dataset", type=Path, help="dataset folder with dataset.json, imagesTr, labelsTr")
    parser.add_argument("--out", type=Path, required=True, help="folder for the fingerprint and plan folders")
    parser.add_argument("--network", choices=NETWORK_NAMES, default="diffumamba")
    parser.add_argument("--dims", type=int, choices=(2, 3), default=3)
    parser.add_argument("--memory-gb", type=float, default=8.0, help="training memory budget (default 8)")
    parser.add_argument("--max-patch", type=int, nargs="+", metavar="N", help="upper bound of the patch size")
    parser.add_argument("--no-amp", action="store_true", help="plan for fp32 training (CPU)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..data import RawDataset
    from ..data.cache import preprocess_cases
    from ..data.fingerprint import compute_fingerprint, fingerprint_hash
    from ..data.plan import make_plan
    from ..files import atomic_write_text

    dataset = RawDataset(args.dataset)
    cases = dataset.training_cases()
    if args.max_patch and len(args.max_patch) != args.dims:
        raise ValueError(f"--max-patch needs {args.dims} numbers")
    args.out.mkdir(parents=True, exist_ok=True)
    fingerprint_file = args.out / "fingerprint.json"
    fingerprint = json.loads(fingerprint_file.read_text()) if fingerprint_file.exists() else None
    if fingerprint is None or fingerprint.get("cases") != [c.name for c in cases]:
        fingerprint = compute_fingerprint(dataset, cases, progress=lambda c: tqdm(c, desc="fingerprint", unit="case"))
        atomic_write_text(fingerprint_file, json.dumps(fingerprint, indent=2) + "\n")
    plan = make_plan(fingerprint, fingerprint_hash(fingerprint), args.network, args.dims, args.memory_gb,
                     max_patch=args.max_patch, mixed_precision=not args.no_amp)
    folder, computed = preprocess_cases(cases, plan, args.out,
                                        progress=lambda c: tqdm(c, desc="preprocess", unit="case"))
    print(f"target spacing {plan.target_spacing} mm, patch {plan.patch_size}, batch {plan.batch_size}, "
          f"{plan.network_config().n_stages} stages")
    print(f"{computed} case(s) preprocessed, {len(cases) - computed} already cached")
    print(f"fingerprint: {fingerprint_file}")
    print(f"plan and cases: {folder}")
    return 0
