"""``diffumamba network``: describe a network (config, parameters, output shapes) and write its config."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..files import atomic_write_text
from ..nets import NETWORK_NAMES, NetworkConfig, build_network, default_2d, isotropic_3d, lung_ct_3d

PRESETS = {"lung_ct_3d": lung_ct_3d, "isotropic_3d": isotropic_3d, "default_2d": default_2d}


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "network", help="describe a network and write its JSON config",
        description="Build a network from a preset or a JSON config, print its parameter count and "
                    "output shapes, and optionally write the config that a checkpoint would carry.")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--preset", choices=sorted(PRESETS), default="lung_ct_3d")
    source.add_argument("--config", type=Path, help="a network config JSON file")
    parser.add_argument("--network", choices=NETWORK_NAMES, help="network family (default: diffumamba, "
                        "or the one in --config)")
    parser.add_argument("--in-channels", type=int)
    parser.add_argument("--num-classes", type=int)
    parser.add_argument("--input-size", type=int, nargs="+", metavar="N",
                        help="run one forward pass on a zero image of this size and print the output shapes")
    parser.add_argument("--write-config", type=Path, metavar="FILE", help="write the config JSON here")
    parser.set_defaults(run=run)


def load_config(args: argparse.Namespace) -> NetworkConfig:
    if args.config is not None:
        config = NetworkConfig.from_json(args.config.read_text())
    else:
        config = PRESETS[args.preset](args.network or "diffumamba")
    changes = {k: v for k, v in (("network", args.network), ("in_channels", args.in_channels),
                                 ("num_classes", args.num_classes)) if v is not None}
    return config.replace(**changes) if changes else config


def run(args: argparse.Namespace) -> int:
    import torch

    config = load_config(args)
    if args.write_config and not args.write_config.parent.is_dir():
        raise FileNotFoundError(f"output folder does not exist: {args.write_config.parent}")
    model = build_network(config)
    print(f"network: {config.network} ({config.spatial_dims}D, {config.n_stages} stages, "
          f"features {config.features_per_stage}, patch {config.patch_size})")
    print(f"parameters: {model.count_parameters():,}")
    for name, module in model.named_children():
        print(f"  {name}: {sum(p.numel() for p in module.parameters()):,}")
    if args.input_size:
        if len(args.input_size) != config.spatial_dims:
            raise ValueError(f"--input-size needs {config.spatial_dims} numbers for a {config.spatial_dims}D network")
        model.train()            # training mode: the deep-supervision outputs too (eval mode returns only the first)
        with torch.no_grad():
            out = model(torch.zeros(1, config.in_channels, *args.input_size))
        outputs = out if isinstance(out, list) else [out]
        print("outputs: " + ", ".join(str(tuple(o.shape)) for o in outputs))
    if args.write_config:
        atomic_write_text(args.write_config, config.to_json() + "\n")
        print(f"config written to {args.write_config}")
    return 0
