"""Our selective scan against the plain sequential definition (forward, gradients, shapes, errors)."""

import itertools

import pytest
import torch

import diffumamba.nets.scan as scan_module
from diffumamba.nets.mamba import selective_scan
from diffumamba.nets.scan_reference import selective_scan_reference
from diffumamba.nets.scan import selective_scan_torch

SHAPES = [  # batch, d_inner, d_state, L: odd sizes and length-1 sequences included
    (1, 1, 1, 1), (2, 3, 4, 1), (1, 5, 16, 2), (2, 7, 3, 17), (3, 4, 16, 33), (1, 16, 8, 64), (2, 9, 5, 101),
]
OPTIONS = list(itertools.product([False, True], repeat=4))  # with D, with z, with delta_bias, softplus


def make_inputs(batch, d_inner, d_state, length, with_D, with_z, with_bias, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = {
        "u": torch.randn(batch, d_inner, length, generator=g),
        "delta": torch.rand(batch, d_inner, length, generator=g) * 0.5,
        "A": -(torch.rand(d_inner, d_state, generator=g) * 2 + 0.1),
        "B": torch.randn(batch, d_state, length, generator=g),
        "C": torch.randn(batch, d_state, length, generator=g),
        "D": torch.randn(d_inner, generator=g) if with_D else None,
        "z": torch.randn(batch, d_inner, length, generator=g) if with_z else None,
        "delta_bias": torch.rand(d_inner, generator=g) * 0.3 if with_bias else None,  # delta stays > 0
    }
    return {k: (v.requires_grad_() if v is not None else None) for k, v in t.items()}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "D{}-z{}-bias{}-softplus{}".format(*map(int, o)))
def test_forward_and_gradients_match_reference(shape, options):
    with_D, with_z, with_bias, softplus = options
    inputs = make_inputs(*shape, with_D, with_z, with_bias)
    leaves = [v for v in inputs.values() if v is not None]
    ours = selective_scan_torch(**inputs, delta_softplus=softplus)
    ref = selective_scan_reference(**inputs, delta_softplus=softplus)
    assert ours.shape == (shape[0], shape[1], shape[3])
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)
    weights = torch.randn_like(ref)
    grads = torch.autograd.grad((ours * weights).sum(), leaves)
    ref_grads = torch.autograd.grad((ref * weights).sum(), leaves)
    for name, g, r in zip([k for k, v in inputs.items() if v is not None], grads, ref_grads):
        torch.testing.assert_close(g, r, atol=1e-4, rtol=1e-4, msg=lambda m, name=name: f"grad of {name}: {m}")
        assert torch.isfinite(g).all()


def test_gradients_are_not_trivially_zero():
    inputs = make_inputs(2, 6, 4, 9, True, True, True)
    grads = torch.autograd.grad(selective_scan_torch(**inputs, delta_softplus=True).square().sum(),
                                [inputs["A"], inputs["B"], inputs["delta"]])
    assert all(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("length", [1, 2, 13])
def test_last_state_and_its_gradient(length):
    inputs = make_inputs(2, 5, 3, length, True, False, True)
    y, state = selective_scan_torch(**inputs, delta_softplus=True, return_last_state=True)
    y_ref, state_ref = selective_scan_reference(**inputs, delta_softplus=True, return_last_state=True)
    assert state.shape == (2, 5, 3)
    torch.testing.assert_close(state, state_ref, atol=1e-5, rtol=1e-5)
    leaves = [inputs[k] for k in ("u", "delta", "A", "B")]
    g = torch.autograd.grad(state.sum() + y.sum(), leaves)
    g_ref = torch.autograd.grad(state_ref.sum() + y_ref.sum(), leaves)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_recurrence_on_hand_made_numbers():
    # d_inner = d_state = 1, delta = 1, A = log(0.5): h[t] = 0.5 h[t-1] + u[t] B[t]; y = C h.
    u = torch.tensor([[[1.0, 2.0, 3.0]]])
    out = selective_scan_torch(u, torch.ones(1, 1, 3), torch.log(torch.tensor([[0.5]])), torch.ones(1, 1, 3),
                               torch.tensor([[[1.0, 1.0, 2.0]]]))
    torch.testing.assert_close(out, torch.tensor([[[1.0, 2.5, 2 * 4.25]]]))


def test_half_precision_inputs_keep_their_dtype():
    inputs = make_inputs(1, 4, 2, 5, True, True, False)
    half = {k: (v.detach().bfloat16() if v is not None and k in ("u", "z") else v) for k, v in inputs.items()}
    out = selective_scan_torch(**half)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), selective_scan_reference(**half).float(), atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("bad", ["u", "A", "B", "C", "D", "z", "delta_bias"])
def test_wrong_shapes_raise_clear_errors(bad):
    inputs = make_inputs(2, 4, 3, 5, True, True, True)
    inputs[bad] = torch.randn(*[s + 1 for s in inputs[bad].shape])
    with pytest.raises(ValueError, match=bad if bad != "u" else "shape"):
        selective_scan_torch(**inputs)


def test_cpu_tensors_never_reach_the_cuda_kernel(monkeypatch):
    calls = []
    monkeypatch.setattr(scan_module, "_load_cuda_scan", lambda: calls.append(1) or (lambda *a: None))
    inputs = make_inputs(1, 3, 2, 4, False, False, False)
    out = selective_scan(**inputs)
    assert out is not None and not calls


def test_disable_env_turns_off_mamba_ssm(monkeypatch):
    monkeypatch.setenv("DIFFUMAMBA_DISABLE_MAMBA_SSM", "1")
    monkeypatch.setattr(scan_module, "_cuda_scan_probed", False)
    monkeypatch.setattr(scan_module, "_cuda_scan_fn", None)
    assert scan_module._load_cuda_scan() is None


def _mamba_ssm_cuda_available():
    if not torch.cuda.is_available():
        return False
    try:
        import mamba_ssm.ops.selective_scan_interface  # noqa: F401
    except Exception:
        return False
    return True


@pytest.mark.skipif(not _mamba_ssm_cuda_available(), reason="needs CUDA and mamba-ssm")
def test_matches_mamba_ssm_cuda_kernel():
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    inputs = {k: (v.detach().cuda().requires_grad_() if v is not None else None)
              for k, v in make_inputs(2, 64, 16, 300, True, True, True).items()}
    leaves = [v for v in inputs.values() if v is not None]
    ours = selective_scan_torch(**inputs, delta_softplus=True)
    cuda = selective_scan_fn(**inputs, delta_softplus=True)
    torch.testing.assert_close(ours, cuda, atol=1e-4, rtol=1e-3)
    g1 = torch.autograd.grad(ours.sum(), leaves)
    g2 = torch.autograd.grad(cuda.sum(), leaves)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-3)
