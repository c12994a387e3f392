"""End-to-end CPU inference benchmark on the real LUNG1-001 CT (512 x 512 x 134 DICOM series).

Times the whole ``diffumamba predict`` command as a user runs it (Python start, DICOM read, lung box,
preprocessing, sliding window, resampling back, writing) in a fresh process per run, with its own peak
resident memory (``os.wait4``), for Diff-UMamba and a ResUNet of the same size (same plan: preset,
spacing, patch, features; only the network differs), in rotated order over ``--rounds``. The per-stage
split comes from the command's own ``--progress json`` lines. Without ``--model`` the checkpoints are
made here with seeded random weights: run time does not depend on the weight values.

    python bench/predict.py                                   # lung-cpu preset, 3 rounds, 2 threads
    python bench/predict.py --preset none --rounds 1          # the data-driven plan (full resolution)
    python bench/predict.py --model my_lung_model.safetensors # a trained checkpoint (and its ResUNet twin)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DIFFUMAMBA_SHARED_DATA", REPO.parent / "shared" / "data"))
LUNG1 = DATA / "nsclc_radiomics_lung1_001"
NETWORKS = ("resunet", "diffumamba")


def make_checkpoints(folder: Path, preset: str | None, model: Path | None) -> dict[str, Path]:
    """A Diff-UMamba and a ResUNet checkpoint with one plan made from LUNG1-001's own fingerprint."""
    import torch

    from diffumamba.convert.dicom import load_dicom_case
    from diffumamba.data.fingerprint import fingerprint_hash
    from diffumamba.data.plan import PRESETS, Preset, make_plan
    from diffumamba.nets import build_network
    from diffumamba.nets.config import NetworkConfig
    from diffumamba.checkpoint import load_checkpoint, save_checkpoint

    if model is not None:
        header, _, _ = load_checkpoint(model)
        plan = header["plan"]
    else:
        import numpy as np
        import SimpleITK as sitk

        images, label = load_dicom_case(LUNG1, "GTV-1")
        image = images[0]
        hu = sitk.GetArrayFromImage(image).astype(np.float32)
        gtv = hu[sitk.GetArrayFromImage(label) > 0]
        fingerprint = {"channel_names": ["CT"], "labels": {"background": 0, "GTV": 1}, "cases": ["LUNG1-001"],
                       "spacings": [list(reversed(image.GetSpacing()))], "shapes_after_crop": [list(hu.shape)],
                       "foreground_intensities": [{"mean": float(gtv.mean()), "std": float(gtv.std()),
                                                   "percentile_00_5": float(np.percentile(gtv, 0.5)),
                                                   "percentile_99_5": float(np.percentile(gtv, 99.5))}]}
        chosen = PRESETS[preset] if preset else Preset(features=(32, 320))
        features = chosen.features or (32, 320)
        plan = make_plan(fingerprint, fingerprint_hash(fingerprint), "diffumamba", base_features=features[0],
                         max_features=features[1], max_patch=chosen.max_patch, target_spacing=chosen.target_spacing,
                         inference=chosen.inference, mixed_precision=False).checkpoint_meta()["plan"]
    paths = {}
    for network in NETWORKS:
        if model is not None and network == header["network"]["network"]:
            paths[network] = model
            continue
        config = NetworkConfig.from_dict({**plan["network"], "network": network})
        torch.manual_seed(0)
        paths[network] = folder / f"{network}.safetensors"
        save_checkpoint(paths[network], build_network(config), config, {"plan": {**plan, "network": config.to_dict()},
                                                                        "labels": plan["labels"]})
    return paths


def run_once(checkpoint: Path, out: Path, threads: int, extra: list[str]) -> dict:
    """One fresh ``diffumamba predict`` process: wall time, peak RSS and the time of each progress stage."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "diffumamba", "predict", str(LUNG1), "--model", str(checkpoint), "--out", str(out),
               "--format", "nifti", "--progress", "json", "--overwrite", *extra]   # every round writes into one folder
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    stages, last = {}, ("start", start)
    for line in process.stderr:
        now = time.perf_counter()
        try:
            stage = json.loads(line)["stage"]
        except (ValueError, KeyError):
            continue
        if stage != last[0]:
            stages[last[0]] = stages.get(last[0], 0.0) + now - last[1]
            last = (stage, now)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    stages[last[0]] = stages.get(last[0], 0.0) + time.perf_counter() - last[1]
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"predict failed (exit {os.waitstatus_to_exitcode(status)}): {' '.join(command)}")
    return {"wall_s": wall, "peak_mb": usage.ru_maxrss / 1024, "stages": stages}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="lung-cpu", help="plan preset of the generated checkpoints, or 'none'")
    parser.add_argument("--model", type=Path, help="benchmark this trained checkpoint (and a same-plan ResUNet)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--predict-args", nargs=argparse.REMAINDER, default=[],
                        help="extra arguments for predict, e.g. --predict-args --crop none")
    args = parser.parse_args(argv)
    if not LUNG1.is_dir():
        sys.exit(f"LUNG1-001 not found at {LUNG1}; set DIFFUMAMBA_SHARED_DATA")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        checkpoints = make_checkpoints(folder, None if args.preset == "none" else args.preset, args.model)
        results: dict[str, list[dict]] = {network: [] for network in NETWORKS}
        for round_index in range(args.rounds):
            order = NETWORKS[round_index % 2:] + NETWORKS[:round_index % 2]
            for network in order:
                result = run_once(checkpoints[network], folder / "out", args.threads, args.predict_args)
                results[network].append(result)
                print(f"round {round_index + 1} {network}: {result['wall_s']:.1f} s, {result['peak_mb']:.0f} MB",
                      file=sys.stderr, flush=True)
        from diffumamba.checkpoint import load_checkpoint

        plan = load_checkpoint(checkpoints["diffumamba"])[0]["plan"]
    print(f"LUNG1-001 (512 x 512 x 134 DICOM) -> NIfTI label map; preset {args.preset}; spacing "
          f"{plan['target_spacing']} mm, patch {plan['patch_size']}, features {plan['network']['features_per_stage']}, "
          f"predict defaults {plan.get('inference', {})} {' '.join(args.predict_args)}; {args.threads} threads; "
          f"median of {args.rounds} fresh processes per network, rotated order")
    print()
    print("| network | end-to-end s | vs ResUNet | read s | predict s | write s | peak RSS MB | vs ResUNet |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    base_wall = statistics.median(r["wall_s"] for r in results["resunet"])
    base_rss = max(r["peak_mb"] for r in results["resunet"])
    for network in NETWORKS:
        runs = results[network]
        wall = statistics.median(r["wall_s"] for r in runs)
        rss = max(r["peak_mb"] for r in runs)
        stage = {s: statistics.median(r["stages"].get(s, 0.0) for r in runs) for s in ("start", "read", "predict", "write")}
        print(f"| {network} | {wall:.1f} | {wall / base_wall:.2f} | {stage['start'] + stage['read']:.1f} | "
              f"{stage['predict']:.1f} | {stage['write']:.1f} | {rss:.0f} | {rss / base_rss:.2f} |")


if __name__ == "__main__":
    main()
