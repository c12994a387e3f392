"""Mamba block: mamba_ssm-compatible parameters and initialisation, the reference computation, causality."""

import math

import pytest
import torch
import torch.nn.functional as F

from diffumamba.nets.mamba import Mamba
from diffumamba.nets.scan_reference import selective_scan_reference


def mamba_ssm_shapes(d_model, d_state=16, d_conv=4, expand=2):
    """The state_dict of mamba_ssm.Mamba (v1, mamba_simple.py) with default arguments, written out."""
    d_inner, dt_rank = expand * d_model, math.ceil(d_model / 16)
    return {
        "A_log": (d_inner, d_state), "D": (d_inner,),
        "in_proj.weight": (2 * d_inner, d_model),
        "conv1d.weight": (d_inner, 1, d_conv), "conv1d.bias": (d_inner,),
        "x_proj.weight": (dt_rank + 2 * d_state, d_inner),
        "dt_proj.weight": (d_inner, dt_rank), "dt_proj.bias": (d_inner,),
        "out_proj.weight": (d_model, d_inner),
    }


@pytest.mark.parametrize("d_model", [16, 37, 320])
def test_state_dict_matches_mamba_ssm(d_model):
    model = Mamba(d_model)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == mamba_ssm_shapes(d_model)


def test_parameter_count_at_the_bottleneck_width():
    assert sum(p.numel() for p in Mamba(320).parameters()) == 675_200


def test_initialisation_matches_mamba_ssm():
    model = Mamba(64, d_state=16)
    torch.testing.assert_close(model.A_log, torch.log(torch.arange(1.0, 17.0)).repeat(128, 1))
    assert torch.equal(model.D, torch.ones(128))
    dt = F.softplus(model.dt_proj.bias)
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 0.1 * 1.001
    # log-uniform between 1e-3 and 1e-1: the median of log10(dt) is near -2.
    assert abs(torch.log10(dt).median().item() + 2) < 0.3
    bound = model.dt_rank ** -0.5
    assert model.dt_proj.weight.abs().max() <= bound and model.dt_proj.weight.abs().max() > 0.8 * bound
    # in/out projections keep nn.Linear's default (kaiming-uniform, bound 1/sqrt(fan_in)).
    assert model.in_proj.weight.abs().max() <= 1 / math.sqrt(64) and model.in_proj.bias is None
    assert model.A_log._no_weight_decay and model.D._no_weight_decay


def test_state_dict_round_trip_gives_identical_outputs():
    a, b = Mamba(24), Mamba(24)
    x = torch.randn(2, 11, 24)
    assert not torch.allclose(a(x), b(x))
    b.load_state_dict(a.state_dict(), strict=True)
    torch.testing.assert_close(a(x), b(x))


def test_forward_is_mamba_ssm_reference_path():
    """Recompute mamba_ssm's slow path by hand with the sequential scan."""
    torch.manual_seed(1)
    model = Mamba(12, d_state=4, d_conv=3)
    x = torch.randn(2, 9, 12)
    with torch.no_grad():
        xz = (x @ model.in_proj.weight.T).transpose(1, 2)
        u, z = xz.chunk(2, dim=1)
        u = F.silu(F.conv1d(u, model.conv1d.weight, model.conv1d.bias, padding=2, groups=u.shape[1])[..., :9])
        x_dbl = u.transpose(1, 2) @ model.x_proj.weight.T
        dt, B, C = x_dbl.split([model.dt_rank, 4, 4], dim=-1)
        y = selective_scan_reference(u, (dt @ model.dt_proj.weight.T).transpose(1, 2), -torch.exp(model.A_log),
                                     B.transpose(1, 2), C.transpose(1, 2), model.D, z=z,
                                     delta_bias=model.dt_proj.bias, delta_softplus=True)
        expected = y.transpose(1, 2) @ model.out_proj.weight.T
        torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-5)


def test_output_is_causal():
    model = Mamba(8)
    x = torch.randn(1, 10, 8, requires_grad=True)
    model(x)[0, 4].sum().backward()
    assert x.grad[0, 5:].abs().sum() == 0
    assert x.grad[0, :5].abs().sum(-1).min() > 0


def test_rejects_wrong_width():
    with pytest.raises(ValueError, match="expects"):
        Mamba(8)(torch.randn(1, 4, 9))
