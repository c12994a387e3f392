"""The planning options ``preprocess``, ``train`` and ``experiment`` share, and the one call that turns them into a
plan and a preprocessed cache: one place, so a plan option means the same in every command."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..data.plan import PRESETS
from ..nets import NETWORK_NAMES
from .progress_option import add_progress_argument, shows_bars

__all__ = ["add_plan_arguments", "prepare_from_args"]


def add_plan_arguments(parser: argparse.ArgumentParser, network: bool = True) -> None:
    """Options shared by ``preprocess``, ``train`` and ``experiment``: which dataset, where its cache goes, how to plan."""
    parser.add_argument("dataset", type=Path, help="nnU-Net v2 raw dataset folder (dataset.json, imagesTr, labelsTr)")
    parser.add_argument("--preprocessed", "--out", dest="out", type=Path, required=True,
                        help="folder for the fingerprint and the preprocessed cases of each plan")
    if network:
        parser.add_argument("--network", choices=NETWORK_NAMES, default="diffumamba")
    parser.add_argument("--memory-gb", type=float, default=8.0, help="training memory budget (default 8)")
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help="a named profile; its choices apply where the options below are not given. "
                             + "; ".join(f"{name}: {preset.description}" for name, preset in PRESETS.items()))
    parser.add_argument("--spacing", type=float, nargs=3, metavar=("Z", "Y", "X"),
                        help="target spacing in mm instead of the data-driven one")
    parser.add_argument("--max-patch", type=int, nargs="+", metavar="N", help="upper bound of the patch size")
    parser.add_argument("--patch", type=int, nargs=3, metavar=("Z", "Y", "X"),
                        help="the patch size itself (voxels of the target grid), instead of the median case shape "
                             "capped by --max-patch: e.g. a lesion model whose cases are smaller than the context "
                             "it should see (rounded down to the network's strides)")
    parser.add_argument("--features", type=int, nargs=2, metavar=("BASE", "MAX"),
                        help="features of the first stage and the cap (default 32 320)")
    parser.add_argument("--no-amp", action="store_true", help="plan for fp32 training (CPU)")
    parser.add_argument("--task", default="auto", choices=["auto", "segmentation", "propagation", "correction"],
                        help="propagation: train a refinement model on a dataset of (current scan, registered prior "
                             "scan, registered prior GTV) channels; correction: train a click-correction model on any "
                             "segmentation dataset (mask and clicks simulated, see docs/correction.md); auto: the "
                             "dataset's own task (default). preprocess and train with the same --task share one cache")
    add_progress_argument(parser)


def prepare_from_args(args: argparse.Namespace, network: str):
    """Plan and preprocess from the plan options; explicit options override the preset's choices."""
    from ..data.pipeline import prepare
    from ..data.plan import Preset

    preset = PRESETS[args.preset] if args.preset else Preset()
    features = args.features or preset.features or (32, 320)
    return prepare(args.dataset, args.out, network, args.memory_gb, args.max_patch or preset.max_patch,
                   amp=not args.no_amp, base_features=features[0], max_features=features[1],
                   target_spacing=args.spacing or preset.target_spacing, inference=preset.inference,
                   task=getattr(args, "task", "auto"), patch_size=getattr(args, "patch", None),
                   show_progress=shows_bars(args))
