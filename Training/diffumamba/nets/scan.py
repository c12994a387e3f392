"""Selective scan (the S6 recurrence of Mamba) with the interface of ``mamba_ssm``'s ``selective_scan_fn``.

On CUDA with ``mamba-ssm`` importable we call its fused kernel. Everywhere else (laptops running the
Slicer module, CI, GPUs without mamba-ssm) we run our own PyTorch implementation, chosen by
measurement (``bench/scan.py``). The scan core is one custom autograd function over a time-major
layout: discretisation and the contraction with C are vectorised over the whole sequence, and only
the linear recurrence is a Python loop of one fused in-place ``addcmul_`` per step into a contiguous
slice. Its backward is the adjoint recurrence run in reverse plus batched matrix products, so autograd
sees a handful of nodes instead of several per time step. On a 2-core CPU this beats mambapy's
Blelloch parallel scan, whose log-depth passes touch the whole (L, d, n) tensor many times.
"""

from __future__ import annotations

import os
from typing import Callable, Optional

import torch
import torch.nn.functional as F

__all__ = ["selective_scan", "selective_scan_torch", "cuda_kernels_available"]

_DISABLE_ENV = "DIFFUMAMBA_DISABLE_MAMBA_SSM"
_cuda_scan_fn: Optional[Callable] = None
_cuda_scan_probed = False


def _load_cuda_scan() -> Optional[Callable]:
    """Import mamba-ssm lazily: it is slow to import and may fail on machines without CUDA libraries."""
    global _cuda_scan_fn, _cuda_scan_probed
    if not _cuda_scan_probed:
        _cuda_scan_probed = True
        if os.environ.get(_DISABLE_ENV, "") not in ("", "0"):
            return None
        try:
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
        except Exception:  # ImportError, or OSError/RuntimeError from missing CUDA libraries
            selective_scan_fn = None
        _cuda_scan_fn = selective_scan_fn
    return _cuda_scan_fn


def cuda_kernels_available() -> bool:
    """True when mamba-ssm's CUDA selective-scan kernel can be used (and is not disabled)."""
    return torch.cuda.is_available() and _load_cuda_scan() is not None


class _SelectiveScanCore(torch.autograd.Function):
    """y[l,b,d] = sum_n h[l,b,d,n] C[l,b,n], and the last state h[L-1], where
    h[l] = exp(delta[l] A) * h[l-1] + delta[l] u[l] B[l] and h[-1] = 0.

    Inputs are time-major and contiguous: delta, u (L, b, d); A (d, n); B, C (L, b, n). Forward and
    backward each make a few passes over the (L, b, d, n) tensors plus one Python loop of fused
    in-place ``addcmul_`` steps; the backward is the adjoint recurrence g[l] = dy/dh[l] + a[l+1] g[l+1]
    run from the end, from which every gradient follows with batched matrix products.
    """

    @staticmethod
    def forward(ctx, delta, u, A, B, C):
        decay = torch.mul(delta.unsqueeze(-1), A).exp_()                      # a[l] = exp(delta A)
        delta_u = delta * u
        states = delta_u.unsqueeze(-1) * B.unsqueeze(2)                       # b[l], becomes h[l] in place
        decay_steps, state_steps = decay.unbind(0), states.unbind(0)
        for t in range(1, len(state_steps)):
            state_steps[t].addcmul_(decay_steps[t], state_steps[t - 1])
        y = torch.matmul(states, C.unsqueeze(-1)).squeeze(-1)
        ctx.save_for_backward(delta, u, A, B, C, decay, states)
        return y, states[-1].clone()

    @staticmethod
    def backward(ctx, grad_y, grad_last_state):
        delta, u, A, B, C, decay, states = ctx.saved_tensors
        grad_y = grad_y.contiguous()
        adjoint = grad_y.unsqueeze(-1) * C.unsqueeze(2)                       # dy/dh, becomes g in place
        if grad_last_state is not None:
            adjoint[-1] += grad_last_state
        decay_steps, adjoint_steps = decay.unbind(0), adjoint.unbind(0)
        for t in range(len(adjoint_steps) - 2, -1, -1):
            adjoint_steps[t].addcmul_(decay_steps[t + 1], adjoint_steps[t + 1])
        grad_C = torch.matmul(states.transpose(-1, -2), grad_y.unsqueeze(-1)).squeeze(-1)
        grad_delta_u = torch.matmul(adjoint, B.unsqueeze(-1)).squeeze(-1)
        grad_B = torch.matmul(adjoint.transpose(-1, -2), (delta * u).unsqueeze(-1)).squeeze(-1)
        # d/d(delta A) of a[l] = g[l] h[l-1] a[l]; a[0] multiplies h[-1] = 0.
        grad_exponent = torch.mul(adjoint[1:], states[:-1]).mul_(decay[1:])
        grad_A = torch.einsum("lbdn,lbd->dn", grad_exponent, delta[1:])
        grad_delta = grad_delta_u * u
        grad_delta[1:] += torch.einsum("lbdn,dn->lbd", grad_exponent, A)
        return grad_delta, grad_delta_u * delta, grad_A, grad_B, grad_C


def _check_shapes(u, delta, A, B, C, D, z, delta_bias) -> None:
    if u.dim() != 3:
        raise ValueError(f"selective_scan: u must be (batch, d_inner, L), got shape {tuple(u.shape)}")
    batch, d_inner, length = u.shape
    d_state = A.shape[-1] if A.dim() == 2 else -1
    expected = {
        "delta": (delta, (batch, d_inner, length)),
        "A": (A, (d_inner, d_state)),
        "B": (B, (batch, d_state, length)),
        "C": (C, (batch, d_state, length)),
    }
    if D is not None:
        expected["D"] = (D, (d_inner,))
    if z is not None:
        expected["z"] = (z, (batch, d_inner, length))
    if delta_bias is not None:
        expected["delta_bias"] = (delta_bias, (d_inner,))
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(
                f"selective_scan: {name} must have shape {shape} for u of shape {tuple(u.shape)}, got {tuple(tensor.shape)}"
            )
    if A.is_complex():
        raise ValueError("selective_scan: complex A is not supported")


def selective_scan_torch(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                         return_last_state=False):
    """Pure-PyTorch selective scan; same arguments, result and dtype rules as ``selective_scan``."""
    _check_shapes(u, delta, A, B, C, D, z, delta_bias)
    dtype_in = u.dtype
    u = u.float()
    delta = delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    # Time-major layout (L, batch, ...): every step of the recurrence is one contiguous slice.
    def time_major(x):
        return x.float().permute(2, 0, 1).contiguous()

    y, last_state = _SelectiveScanCore.apply(time_major(delta), time_major(u), A.float().contiguous(),
                                             time_major(B), time_major(C))
    y = y.permute(1, 2, 0)
    if D is not None:
        y = y + u * D.float()[:, None]
    if z is not None:
        y = y * F.silu(z.float())
    y = y.to(dtype_in)
    if return_last_state:
        return y, last_state
    return y


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False):
    """Mamba's selective scan with the shapes and semantics of ``mamba_ssm``'s ``selective_scan_fn``.

    Args:
        u: input, (batch, d_inner, L).
        delta: step sizes before ``delta_bias``/softplus, (batch, d_inner, L).
        A: state matrix (negative reals), (d_inner, d_state).
        B, C: input-dependent input and output matrices, (batch, d_state, L).
        D: skip connection weight, (d_inner,), optional.
        z: gate, (batch, d_inner, L), optional; the output is multiplied by SiLU(z).
        delta_bias: added to delta before softplus, (d_inner,), optional.
        delta_softplus: apply softplus to delta.
        return_last_state: also return the final state, (batch, d_inner, d_state).

    Returns:
        y with the dtype of ``u``, (batch, d_inner, L) (and the last state when asked).
    """
    if u.is_cuda:
        cuda_fn = _load_cuda_scan()
        if cuda_fn is not None:
            return cuda_fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    return selective_scan_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
