"""Mamba block, parameter-compatible with ``mamba_ssm.Mamba`` (v1, ``mamba_simple.py``).

The parameter names, shapes and initialisation are those of ``mamba_ssm.Mamba`` so that a
``state_dict`` moves between the two in either direction: a checkpoint trained on a GPU with the CUDA
kernels runs on a clinician's laptop with our PyTorch scan, and back. The forward pass is mamba_ssm's
reference ("slow") path; the scan itself goes to mamba-ssm's CUDA kernel when that is importable and
the tensors are on CUDA (see ``selective_scan``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .scan import cuda_kernels_available, selective_scan

__all__ = ["Mamba", "selective_scan", "cuda_kernels_available"]


class Mamba(nn.Module):
    """Selective state-space block mapping (batch, L, d_model) to (batch, L, d_model).

    Args:
        d_model: token (channel) dimension.
        d_state: SSM state size per inner channel (N).
        d_conv: width of the causal depthwise convolution.
        expand: inner width is ``expand * d_model``.
        dt_rank: rank of the step-size projection; ``"auto"`` is ``ceil(d_model / 16)``.
        dt_min, dt_max: range of the initial step sizes (log-uniform).
        dt_init: ``"random"`` (uniform) or ``"constant"`` initialisation of ``dt_proj.weight``.
        dt_scale: scale of the ``dt_proj.weight`` initialisation.
        dt_init_floor: smallest initial step size.
        conv_bias: bias in the depthwise convolution.
        bias: bias in the input and output projections.
    """

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: int | str = "auto", dt_min: float = 0.001, dt_max: float = 0.1,
                 dt_init: str = "random", dt_scale: float = 1.0, dt_init_floor: float = 1e-4,
                 conv_bias: bool = True, bias: bool = False, device=None, dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.expand = expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)

        self.in_proj = nn.Linear(d_model, self.d_inner * 2, bias=bias, **factory)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, kernel_size=d_conv, groups=self.d_inner,
                                padding=d_conv - 1, bias=conv_bias, **factory)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False, **factory)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True, **factory)

        dt_init_std = self.dt_rank ** -0.5 * dt_scale
        if dt_init == "constant":
            nn.init.constant_(self.dt_proj.weight, dt_init_std)
        elif dt_init == "random":
            nn.init.uniform_(self.dt_proj.weight, -dt_init_std, dt_init_std)
        else:
            raise ValueError(f"dt_init must be 'random' or 'constant', got {dt_init!r}")
        # Step sizes log-uniform in [dt_min, dt_max]; the bias holds their inverse softplus.
        dt = torch.exp(torch.rand(self.d_inner, **factory) * (math.log(dt_max) - math.log(dt_min))
                       + math.log(dt_min)).clamp(min=dt_init_floor)
        inv_dt = dt + torch.log(-torch.expm1(-dt))
        with torch.no_grad():
            self.dt_proj.bias.copy_(inv_dt)
        self.dt_proj.bias._no_reinit = True

        # S4D-real initialisation: A = -(1, 2, ..., d_state) for every inner channel.
        A = torch.arange(1, d_state + 1, dtype=torch.float32, device=device).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(self.d_inner, device=device))
        self.D._no_weight_decay = True
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **factory)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if hidden_states.dim() != 3 or hidden_states.shape[-1] != self.d_model:
            raise ValueError(f"Mamba expects (batch, L, {self.d_model}), got {tuple(hidden_states.shape)}")
        length = hidden_states.shape[1]
        xz = self.in_proj(hidden_states).transpose(1, 2)                     # (b, 2*d_inner, L)
        x, z = xz.chunk(2, dim=1)
        x = F.silu(self.conv1d(x)[..., :length])                             # causal depthwise conv
        x_dbl = self.x_proj(x.transpose(1, 2))                               # (b, L, dt_rank + 2N)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.linear(dt, self.dt_proj.weight).transpose(1, 2)               # bias goes in as delta_bias
        A = -torch.exp(self.A_log.float())
        y = selective_scan(x, dt, A, B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous(),
                           self.D.float(), z=z, delta_bias=self.dt_proj.bias.float(), delta_softplus=True)
        return self.out_proj(y.transpose(1, 2))
