"""Selective-scan benchmark: sequential reference vs our scan vs mambapy's pscan (vs mamba-ssm on CUDA).

Every implementation gets the same inputs (those a Mamba(d_model) block feeds its scan) in the same
process; the table gives the median of ``--runs`` timed runs after ``--warmup`` runs, the ratio to the
sequential reference measured in the same run, our speed-up over mambapy, and the largest absolute
difference of the output from the reference.

    python bench/scan.py                      # d_model 320, batch 2, L = 64 216 512 4096, 2 threads
    python bench/scan.py --device cuda        # adds mamba-ssm's CUDA kernel when importable
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

from diffumamba.nets.scan_reference import selective_scan_reference
from diffumamba.nets.scan import selective_scan_torch


def mambapy_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """mambapy's own selective_scan recipe (discretise, ``pscan``, contract with C) in our argument layout."""
    from mambapy.pscan import pscan

    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    delta, u = delta.transpose(1, 2), u.transpose(1, 2)                     # (b, L, d)
    decay = torch.exp(delta.unsqueeze(-1) * A)                               # (b, L, d, n)
    drive = delta.unsqueeze(-1) * B.transpose(1, 2).unsqueeze(2) * u.unsqueeze(-1)
    states = pscan(decay, drive)
    y = (states @ C.transpose(1, 2).unsqueeze(-1)).squeeze(3)
    if D is not None:
        y = y + D * u
    y = y.transpose(1, 2)
    return y * F.silu(z) if z is not None else y


def implementations(device: str) -> dict[str, Callable]:
    impls = {"reference (sequential)": selective_scan_reference, "ours": selective_scan_torch}
    try:
        import mambapy.pscan  # noqa: F401
        impls["mambapy pscan"] = mambapy_scan
    except ImportError:
        print("mambapy not installed (pip install mambapy): its column is left out")
    if device == "cuda":
        try:
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
            impls["mamba-ssm CUDA"] = selective_scan_fn
        except Exception as err:  # noqa: BLE001 - any import failure just drops the column
            print(f"mamba-ssm not usable ({err}): its column is left out")
    return impls


def make_inputs(batch: int, d_model: int, length: int, d_state: int, device: str, seed: int = 0):
    """Inputs shaped and scaled as Mamba(d_model, expand=2) would produce them at initialisation."""
    g = torch.Generator().manual_seed(seed)
    d_inner = 2 * d_model

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device).requires_grad_()

    A = -torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d_inner, 1).to(device).requires_grad_()
    dt = torch.exp(torch.rand(d_inner, generator=g) * (torch.log(torch.tensor(0.1)) - torch.log(torch.tensor(1e-3)))
                   + torch.log(torch.tensor(1e-3)))
    delta_bias = (dt + torch.log(-torch.expm1(-dt))).to(device).requires_grad_()
    return dict(u=randn(batch, d_inner, length), delta=randn(batch, d_inner, length, scale=0.2), A=A,
                B=randn(batch, d_state, length), C=randn(batch, d_state, length),
                D=torch.ones(d_inner, device=device).requires_grad_(), z=randn(batch, d_inner, length),
                delta_bias=delta_bias, delta_softplus=True)


def timed(fn: Callable[[], None], runs: int, warmup: int, device: str) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 216, 512, 4096])
    parser.add_argument("--d-model", type=int, default=320)
    parser.add_argument("--d-state", type=int, default=16)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    impls = implementations(args.device)
    print(f"selective scan, d_model {args.d_model} (d_inner {2 * args.d_model}), d_state {args.d_state}, "
          f"batch {args.batch}, {args.device}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"median of {args.runs} runs after {args.warmup} warm-up")
    print()
    print("| L | implementation | forward ms | fwd vs ref | fwd+bwd ms | fwd+bwd vs ref | ours faster by (fwd / fwd+bwd) | max abs err |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for length in args.lengths:
        inputs = make_inputs(args.batch, args.d_model, length, args.d_state, args.device)
        tensors = [v for v in inputs.values() if isinstance(v, torch.Tensor)]
        with torch.no_grad():
            expected = selective_scan_reference(**inputs)
        rows = {}
        for name, scan in impls.items():
            def forward(scan=scan):
                with torch.no_grad():
                    scan(**inputs)

            def forward_backward(scan=scan):
                scan(**inputs).sum().backward()
                for t in tensors:
                    t.grad = None

            with torch.no_grad():
                error = (scan(**inputs).float() - expected).abs().max().item()
            rows[name] = (timed(forward, args.runs, args.warmup, args.device),
                          timed(forward_backward, args.runs, args.warmup, args.device), error)
        ref_f, ref_fb, _ = rows["reference (sequential)"]
        ours_f, ours_fb, _ = rows["ours"]
        for name, (fwd, fwd_bwd, error) in rows.items():
            faster = f"{fwd / ours_f:.2f}x / {fwd_bwd / ours_fb:.2f}x" if name != "ours" else ""
            print(f"| {length} | {name} | {fwd * 1e3:.1f} | {fwd / ref_f:.2f} | {fwd_bwd * 1e3:.1f} | "
                  f"{fwd_bwd / ref_fb:.2f} | {faster} | {error:.1e} |", flush=True)


if __name__ == "__main__":
    main()
