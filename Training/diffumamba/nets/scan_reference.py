"""Plain sequential selective scan: the obviously-correct definition, for tests and benchmarks only.

It follows the recurrence step by step with ordinary autograd, exactly as written in the Mamba paper
(and as ``mamba_ssm``'s ``selective_scan_ref``), so the fast implementation can be checked against it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["selective_scan_reference"]


def selective_scan_reference(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                             return_last_state=False):
    dtype_in = u.dtype
    u = u.float()
    delta = delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()[..., None]
    if delta_softplus:
        delta = F.softplus(delta)
    A, B, C = A.float(), B.float(), C.float()
    state = u.new_zeros((u.shape[0], A.shape[0], A.shape[1]))
    outputs = []
    for t in range(u.shape[2]):
        decay = torch.exp(delta[:, :, t, None] * A)                                   # (b, d, n)
        drive = delta[:, :, t, None] * B[:, None, :, t] * u[:, :, t, None]            # (b, d, n)
        state = decay * state + drive
        outputs.append((state * C[:, None, :, t]).sum(-1))                            # (b, d)
    y = torch.stack(outputs, dim=2)
    if D is not None:
        y = y + u * D.float()[:, None]
    if z is not None:
        y = y * F.silu(z.float())
    y = y.to(dtype_in)
    return (y, state) if return_last_state else y
