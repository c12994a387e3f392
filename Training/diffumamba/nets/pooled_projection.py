"""``adaptive_avg_pool(relu(conv1x1(x.detach())), size)`` without the full-resolution intermediate.

The NRM projects every encoder skip, including the full-resolution one, to the bottleneck width
(320 channels) before pooling it down to the bottleneck size. Done literally, a 96^3 batch of 2 makes
two 2.3 GB tensors (conv output and ReLU output) that autograd keeps for backward, only to average
them away. Because the input is detached, backward needs only the weight and bias gradients, so we
compute the result slab by slab along the first spatial axis and recompute each slab in backward:
the same numbers, a few MB of working memory, and no page-faulting of huge buffers.

When the pooling is not an exact block average (the skip size is not a multiple of the target size,
which the padded networks never produce) the plain composition is used instead.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["project_relu_pool"]

_SLAB_BYTES = 4 * 2**20


def project_relu_pool(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                      size: Sequence[int]) -> torch.Tensor:
    """Adaptive average pooling to ``size`` of ReLU(1x1 convolution of ``x.detach()``).

    Args:
        x: (batch, C_in, *spatial), 2D or 3D; no gradient flows into it. The result is fp32.
        weight: 1x1 convolution weight, (C_out, C_in, 1, ...).
        bias: (C_out,) or None.
        size: target spatial size.
    """
    spatial = x.shape[2:]
    size = tuple(int(s) for s in size)
    if len(size) != len(spatial) or any(n % s for n, s in zip(spatial, size)):
        conv = F.conv3d if x.dim() == 5 else F.conv2d
        pool = F.adaptive_avg_pool3d if x.dim() == 5 else F.adaptive_avg_pool2d
        return pool(F.relu(conv(x.detach(), weight, bias)), size)
    if bias is None:
        bias = weight.new_zeros(weight.shape[0])
    # Always fp32: a block sum over up to 32^3 voxels would lose precision (or overflow) in fp16.
    with torch.autocast(device_type=x.device.type, enabled=False):
        return _ProjectReLUPool.apply(x.detach().float(), weight.float(), bias.float(), size)


class _ProjectReLUPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, size):
        ctx.save_for_backward(x, weight, bias)
        ctx.size = size
        out = x.new_zeros((x.shape[0], weight.shape[0], *size))
        for sample, rows, depth, pre in _slabs(x, weight, bias, size):
            slab_shape = (weight.shape[0], depth.stop - depth.start, *x.shape[3:])
            out[sample, :, rows] += _block_sum(pre.relu_().view(slab_shape), size, rows.stop - rows.start)
        return out.div_(_block_volume(x.shape[2:], size))

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, bias = ctx.saved_tensors
        size = ctx.size
        grad_cell = grad_out / _block_volume(x.shape[2:], size)
        grad_w = torch.zeros(weight.shape[0], weight.shape[1], dtype=weight.dtype, device=weight.device)
        grad_b = torch.zeros_like(bias)
        block = [n // s for n, s in zip(x.shape[2:], size)]
        for sample, rows, depth, pre in _slabs(x, weight, bias, size):
            # d out / d pre: each cell's gradient spread over its block where the ReLU was active,
            # written over ``pre`` in place (a view expands the cells; nothing else is allocated).
            cells = grad_cell[sample, :, rows]
            per_row = (depth.stop - depth.start) // (rows.stop - rows.start)
            cell_shape, spread_shape = [cells.shape[0]], [cells.shape[0]]
            for n, k in zip(cells.shape[1:], [per_row] + block[1:]):
                cell_shape += [n, 1]
                spread_shape += [n, k]
            spread = cells.reshape(cell_shape).expand(spread_shape)
            grad_pre = pre.gt_(0).view(spread_shape).mul_(spread).view(pre.shape)
            grad_w.addmm_(grad_pre, x[sample, :, depth].flatten(1).t())
            grad_b += grad_pre.sum(dim=1)
        return None, grad_w.view_as(weight), grad_b, None


def _slabs(x, weight, bias, size):
    """Yield (sample, cell rows, slab, pre-activation (C_out, voxels)) over slabs of spatial axis 0.

    A slab is either several whole cell rows or a fraction of one row (its depth then divides the
    block), sized to about ``_SLAB_BYTES`` of pre-activation. Per-sample 2D products let BLAS read
    the strided slab in place (no copies).
    """
    total = x.shape[2]
    block = total // size[0]
    plane_bytes = weight.shape[0] * math.prod(x.shape[3:]) * x.element_size()
    depth = max(1, _SLAB_BYTES // max(plane_bytes, 1))
    if depth >= block:
        depth = min(total, depth // block * block)
    else:
        depth = max(d for d in range(1, depth + 1) if block % d == 0)
    w2d = weight.reshape(weight.shape[0], -1)
    bias2d = bias[:, None]
    for sample in range(x.shape[0]):
        for start in range(0, total, depth):
            stop = min(total, start + depth)
            pre = torch.addmm(bias2d, w2d, x[sample, :, start:stop].flatten(1))
            rows = slice(start // block, max(start // block + 1, stop // block))
            yield sample, rows, slice(start, stop), pre


def _block_sum(values, size, rows):
    """Sum each cell of a (channels, *slab) tensor covering ``rows`` cell rows (or part of one row)."""
    shape = [values.shape[0]]
    for n, s in zip(values.shape[1:], (rows, *size[1:])):
        shape += [s, n // s]
    return values.reshape(shape).sum(dim=tuple(range(2, len(shape), 2)))


def _block_volume(spatial, size) -> int:
    return math.prod(n // s for n, s in zip(spatial, size))
