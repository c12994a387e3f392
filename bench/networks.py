"""Network benchmark: training-step time (forward + backward) and peak memory of ResUNet, UMambaBot
and DiffUMamba on 3D patches, with the ratio to ResUNet measured in the same run.

Each (network, patch) is measured in fresh subprocesses so that its peak resident memory is its own,
``--rounds`` times in rotated order: single processes were seen to differ by up to 10% from run to
run, and a fixed order would charge any systematic effect to the same network every time. The networks are the
6-stage isotropic 3D configuration (features 32..320, 3x3x3 kernels, stride 2), deep supervision on,
batch 2; time is the median of all timed steps.

    python bench/networks.py                          # patches 64 and 96, CPU, 2 threads
    python bench/networks.py --sizes 64 --rounds 1    # quicker
    python bench/networks.py --device cuda --threads 16
    python bench/networks.py --networks resunet diffumamba diffumamba-literal-nrm   # NRM design check
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

NETWORKS = ("resunet", "umambabot", "diffumamba")
# DiffUMamba with the NRM projection written literally (pool(relu(conv(x)))), to measure what
# ``project_relu_pool`` saves; not run unless asked for.
LITERAL = "diffumamba-literal-nrm"


def use_literal_nrm_projection() -> None:
    import torch.nn.functional as F

    import diffumamba.nets.nrm as nrm

    def literal(x, weight, bias, size):
        conv = F.conv3d if x.dim() == 5 else F.conv2d
        pool = F.adaptive_avg_pool3d if x.dim() == 5 else F.adaptive_avg_pool2d
        return pool(F.relu(conv(x.detach(), weight, bias)), size)

    nrm.project_relu_pool = literal


def measure(network: str, size: int, batch: int, runs: int, warmup: int, threads: int, device: str) -> dict:
    import torch

    from diffumamba.nets import build_network, isotropic_3d

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if network == LITERAL:
        use_literal_nrm_projection()
    model = build_network(isotropic_3d(network.split("-")[0], patch_size=[size] * 3)).to(device)
    x = torch.randn(batch, 1, size, size, size, device=device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def step():
        outputs = model(x)
        loss = sum(o.float().mean() for o in outputs)
        loss.backward()
        model.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"network": network, "size": size, "steps_s": times, "peak_mb": peak,
            "params": sum(p.numel() for p in model.parameters())}


def run_worker(network: str, size: int, args: argparse.Namespace) -> dict | None:
    command = [sys.executable, __file__, "--worker", network, str(size), "--batch", str(args.batch),
               "--runs", str(args.runs), "--warmup", str(args.warmup), "--threads", str(args.threads),
               "--device", args.device]
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        print(f"{network} at {size}^3 failed: {done.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1][len("RESULT "):])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 96])
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=NETWORKS + (LITERAL,))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--runs", type=int, default=2, help="timed steps per process")
    parser.add_argument("--rounds", type=int, default=2, help="fresh processes per network, in rotated order")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--worker", nargs=2, metavar=("NETWORK", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        result = measure(args.worker[0], int(args.worker[1]), args.batch, args.runs, args.warmup, args.threads,
                         args.device)
        print("RESULT " + json.dumps(result))
        return

    print(f"training step (fwd+bwd), batch {args.batch}, {args.device}, {args.threads} threads; "
          f"{args.rounds} rounds x {args.runs} steps after {args.warmup} warm-up, each round a fresh process "
          f"per network in rotated order; step = median of all steps, peak = max over rounds of "
          f"{'CUDA max allocated' if args.device == 'cuda' else 'process peak RSS'}")
    print()
    print("| patch | network | parameters | step s | vs ResUNet | peak MB | vs ResUNet |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        results: dict[str, list[dict]] = {network: [] for network in args.networks}
        for round_index in range(args.rounds):
            shift = round_index % len(args.networks)
            for network in args.networks[shift:] + args.networks[:shift]:
                result = run_worker(network, size, args)
                if result:
                    results[network].append(result)
        summary = {network: {"step_s": statistics.median(t for r in rs for t in r["steps_s"]),
                             "peak_mb": max(r["peak_mb"] for r in rs), "params": rs[0]["params"]}
                   for network, rs in results.items() if rs}
        baseline = summary.get("resunet")
        for network, r in summary.items():
            ratio_t = f"{r['step_s'] / baseline['step_s']:.3f}" if baseline else "n/a"
            ratio_m = f"{r['peak_mb'] / baseline['peak_mb']:.3f}" if baseline else "n/a"
            print(f"| {size}^3 | {network} | {r['params']:,} | {r['step_s']:.2f} | {ratio_t} | "
                  f"{r['peak_mb']:.0f} | {ratio_m} |", flush=True)


if __name__ == "__main__":
    main()
