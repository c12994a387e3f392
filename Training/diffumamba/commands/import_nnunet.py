"""``diffumamba import-nnunet``: an official Diff-UMamba / U-Mamba Bot nnU-Net results folder -> our model package."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "import-nnunet", help="convert official Diff-UMamba / U-Mamba Bot nnU-Net checkpoints into a model package",
        description="RESULTS is an nnU-Net v2 results folder of nnUNetTrainerDiffUMamba or nnUNetTrainerUMambaBot "
                    "(dataset.json, plans.json, fold_N/checkpoint_final.pth). The .pth files are read without running "
                    "pickled code; their weights are renamed onto our networks, which must then match the plans "
                    "exactly; preprocessing is taken from the plans, which are validated (absurd values, and folds "
                    "whose own plans differ, are refused). The package (safetensors, our plan, the "
                    "source's dataset.json, a model card) runs with predict/propagate --model on CPU or GPU and can "
                    "be listed in the Slicer catalog. See docs/nnunet_import.md.")
    parser.add_argument("results", type=Path, metavar="RESULTS")
    parser.add_argument("--folds", nargs="+", metavar="FOLD", help="folds to import (default: every fold_* folder)")
    parser.add_argument("--checkpoint", choices=["final", "best"], default="final",
                        help="checkpoint_final.pth (default) or checkpoint_best.pth")
    parser.add_argument("--out", type=Path, required=True, help="the model package to write (.zip)")
    parser.add_argument("--card", type=Path, help="model card (Markdown) to ship instead of the generated one")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..model_package import write_model_package
    from ..nnunet_import.results_folder import import_results_folder, model_card

    if args.out.suffix.lower() != ".zip":
        raise ValueError(f"--out {args.out}: a model package is a .zip file")
    imported = import_results_folder(args.results, args.folds, args.checkpoint)
    dataset = json.loads(imported.dataset_json)
    card = args.card.read_text() if args.card else model_card(imported, args.results, dataset)
    digest = write_model_package(args.out, imported.folds, card, {"dataset.json": imported.dataset_json})
    for note in imported.notes:
        print(f"note: {note}")
    plan = imported.folds[0].header["plan"]
    print(f"wrote {args.out}: {imported.trainer} ({imported.configuration}) as our {imported.network}, folds "
          f"{', '.join(f.name for f in imported.folds)}; spacing {plan['target_spacing']} mm, patch "
          f"{plan['patch_size']}; {args.out.stat().st_size / 1e6:.1f} MB, sha256 {digest} (read back and verified)")
    return 0
