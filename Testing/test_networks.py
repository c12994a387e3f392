"""ResUNet, UMambaBot and Diff-UMamba: shapes, block counts, NRM gradient isolation, init, configs."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from diffumamba.nets import (NETWORK_NAMES, DiffUMamba, NetworkConfig, ResUNet, UMambaBot, build_network,
                             default_2d, from_nnunet_plans, isotropic_3d, lung_ct_3d)
from diffumamba.nets.blocks import ResidualBlock
from diffumamba.nets.config import umambabot_block_counts
from diffumamba.nets.pooled_projection import project_relu_pool


def small_3d(network, **kw):
    return isotropic_3d(network, n_stages=4, base_features=4, max_features=16, **kw)


def small_2d(network, **kw):
    return default_2d(network, n_stages=4, base_features=4, max_features=16, **kw)


@pytest.mark.parametrize("network", NETWORK_NAMES)
@pytest.mark.parametrize("make, size", [(small_3d, (16, 24, 16)), (small_2d, (32, 40)),
                                        (small_3d, (17, 21, 9)), (small_2d, (31, 7))])
@pytest.mark.parametrize("deep_supervision", [True, False])
def test_output_shapes(network, make, size, deep_supervision):
    config = make(network, num_classes=3).replace(deep_supervision=deep_supervision)
    model = build_network(config)
    out = model(torch.randn(2, 1, *size))
    if not deep_supervision:
        assert out.shape == (2, 3, *size)
        return
    assert len(out) == config.n_stages - 1
    scale = [1] * len(size)
    for level, logits in enumerate(out):
        scale = [a * b for a, b in zip(scale, config.strides[level])]
        assert logits.shape == (2, 3, *[math.ceil(n / s) for n, s in zip(size, scale)])


def test_odd_input_equals_padded_input_inside_the_valid_region():
    model = build_network(small_3d("diffumamba").replace(deep_supervision=False)).eval()
    x = torch.randn(1, 1, 13, 15, 9)
    padded = F.pad(x, (0, 7, 0, 1, 0, 3))  # to the multiple of 8 the network pads to itself
    torch.testing.assert_close(model(x), model(padded)[..., :13, :15, :9])


def test_anisotropic_lung_preset_runs_on_a_small_patch():
    config = lung_ct_3d("diffumamba").replace(features_per_stage=[4, 8, 8, 8, 8, 8])
    out = build_network(config)(torch.randn(1, 1, 32, 64, 64))
    assert out[0].shape == (1, 2, 32, 64, 64) and out[-1].shape == (1, 2, 2, 4, 4)
    lung = lung_ct_3d("diffumamba")
    assert [p // d for p, d in zip(lung.patch_size, lung.size_divisor())] == [5, 6, 5]  # 150-token bottleneck


def test_umambabot_block_rule():
    assert umambabot_block_counts(6) == ([2, 2, 2, 1, 1, 1], [2, 2, 2, 1, 1])
    assert umambabot_block_counts(5, [2, 3, 2, 2, 2], 2) == ([2, 3, 2, 1, 1], [2, 2, 2, 1])
    model = build_network(lung_ct_3d("resunet"))
    counts = [sum(isinstance(m, ResidualBlock) for m in stage.modules()) for stage in model.encoder.stages]
    assert counts == [2, 2, 2, 1, 1, 1]
    assert sum(isinstance(m, ResidualBlock) for m in model.encoder.stem.modules()) == 2
    assert [len(stage) for stage in model.decoder.stages] == [2, 2, 2, 1, 1]


def test_parameter_counts_differ_exactly_by_the_bottleneck_modules():
    counts = {name: build_network(lung_ct_3d(name)).count_parameters() for name in NETWORK_NAMES}
    print("parameters (lung_ct_3d):", counts)
    mamba_layer = 675_200 + 2 * 320                              # Mamba(320) + LayerNorm(320)
    projections = sum(c * 320 + 320 for c in [32, 64, 128, 256, 320])
    assert counts["umambabot"] - counts["resunet"] == mamba_layer
    assert counts["diffumamba"] - counts["umambabot"] == mamba_layer + projections + 5


def test_no_gradient_from_the_nrm_branch_reaches_the_encoder():
    model = build_network(small_3d("diffumamba"))
    skips = model.encoder(torch.randn(2, 1, 16, 16, 16))
    model.nrm.mamba_m_2(model.nrm.common_mode(skips)).square().sum().backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.encoder.parameters())
    assert model.nrm.lambdas.grad.abs().min() > 0
    assert all(conv.weight.grad.abs().sum() > 0 for conv in model.nrm.proj_convs)


def test_encoder_gradient_is_the_same_with_or_without_the_noise_branch():
    """The encoder learns only through the decoder skips and m1: removing m2 changes nothing upstream
    of the bottleneck except through the forward values."""
    model = build_network(small_3d("diffumamba").replace(deep_supervision=False))
    x = torch.randn(1, 1, 16, 16, 16)
    skips = model.encoder(x)
    m1 = model.nrm.mamba_m_1(skips[-1])
    noise = model.nrm.mamba_m_2(model.nrm.common_mode(skips))
    grads_with = torch.autograd.grad((m1 - noise).square().sum(), list(model.encoder.parameters()),
                                     retain_graph=True, allow_unused=True)
    # Same loss, but m2's output as a constant: the encoder gradient must be identical.
    grads_const = torch.autograd.grad((m1 - noise.detach()).square().sum(), list(model.encoder.parameters()),
                                      allow_unused=True)
    for a, b in zip(grads_with, grads_const):
        torch.testing.assert_close(a, b)


def test_lambdas_are_independent_learnable_and_get_gradients():
    model = build_network(small_3d("diffumamba"))
    assert torch.equal(model.nrm.lambdas.detach(), torch.full((3,), 0.5))
    assert model.nrm.lambdas.requires_grad
    out = model(torch.randn(1, 1, 16, 16, 16))
    sum(o.square().mean() for o in out).backward()
    grad = model.nrm.lambdas.grad
    assert grad is not None and (grad != 0).all() and len(set(grad.tolist())) == 3
    with torch.no_grad():
        model.nrm.lambdas[0] += 1
    assert model.nrm.lambdas[1] == 0.5  # no shared storage (the older official code tied them)


def test_nrm_equals_the_literal_formula():
    model = build_network(small_3d("diffumamba"))
    skips = model.encoder(torch.randn(2, 1, 16, 16, 16))
    size = skips[-1].shape[2:]
    common = sum(lam * F.adaptive_avg_pool3d(F.relu(conv(s.detach())), size)
                 for lam, conv, s in zip(model.nrm.lambdas, model.nrm.proj_convs, skips[:-1]))
    expected = model.nrm.mamba_m_1(skips[-1]) - model.nrm.mamba_m_2(common)
    torch.testing.assert_close(model.nrm(skips), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape, size", [((2, 4, 12, 8, 6), (3, 2, 3)), ((1, 3, 64, 8, 8), (2, 1, 1)),
                                         ((2, 5, 16, 12), (4, 3)), ((2, 4, 12, 8, 6), (5, 2, 3))])
def test_pooled_projection_matches_conv_relu_pool(shape, size, monkeypatch):
    import diffumamba.nets.pooled_projection as module

    monkeypatch.setattr(module, "_SLAB_BYTES", 64)  # force many slabs, including partial cell rows
    x = torch.randn(*shape)
    w = torch.randn(7, shape[1], *[1] * (len(shape) - 2), requires_grad=True)
    b = torch.randn(7, requires_grad=True)
    conv = F.conv3d if x.dim() == 5 else F.conv2d
    pool = F.adaptive_avg_pool3d if x.dim() == 5 else F.adaptive_avg_pool2d
    ours, ref = project_relu_pool(x, w, b, size), pool(F.relu(conv(x, w, b)), size)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    gy = torch.randn_like(ref)
    for a, r in zip(torch.autograd.grad((ours * gy).sum(), [w, b]), torch.autograd.grad((ref * gy).sum(), [w, b])):
        torch.testing.assert_close(a, r, atol=1e-4, rtol=1e-4)


def test_he_init_on_convolutions_but_not_inside_mamba():
    model = build_network(lung_ct_3d("diffumamba"))
    conv = model.encoder.stages[2][0].conv1                        # 64 -> 128, 3x3x3
    expected_std = math.sqrt(2 / (1 + 0.01 ** 2) / (64 * 27))
    assert abs(conv.weight.std().item() / expected_std - 1) < 0.02
    assert conv.bias.abs().sum() == 0
    assert all(c.bias.abs().sum() == 0 for c in model.nrm.proj_convs)
    assert model.nrm.mamba_m_1.mamba.conv1d.bias.abs().sum() > 0  # Conv1d keeps PyTorch/mamba_ssm init
    torch.testing.assert_close(model.nrm.mamba_m_1.mamba.A_log[0], torch.log(torch.arange(1.0, 17.0)))


def test_mamba_layer_runs_in_fp32_under_autocast():
    model = build_network(small_3d("umambabot").replace(deep_supervision=False))
    seen = []
    model.mamba_layer.mamba.register_forward_hook(lambda m, i, o: seen.append((i[0].dtype, o.dtype)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(1, 1, 16, 16, 16))
    assert seen == [(torch.float32, torch.float32)] and torch.isfinite(out.float()).all()


def test_classes_match_names():
    assert type(build_network(small_3d("resunet"))) is ResUNet
    assert type(build_network(small_3d("umambabot"))) is UMambaBot
    assert type(build_network(small_3d("diffumamba"))) is DiffUMamba


@pytest.mark.parametrize("network", NETWORK_NAMES)
def test_config_json_rebuilds_the_same_network(network):
    config = small_2d(network, in_channels=3, num_classes=4)
    original = build_network(config)
    rebuilt = build_network(NetworkConfig.from_json(json.loads(json.dumps(config.to_json()))))
    rebuilt.load_state_dict(original.state_dict(), strict=True)
    x = torch.randn(1, 3, 32, 32)
    original.eval(), rebuilt.eval()
    for a, b in zip(original(x), rebuilt(x)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("change, message", [
    ({"network": "unet"}, "network must be one of"),
    ({"strides": [[1, 1]] * 3}, "strides needs 4 entries"),
    ({"kernel_sizes": [[3, 4]] * 4}, "odd"),
    ({"n_blocks_per_stage": [1, 0, 1, 1]}, "at least one block"),
    ({"color": "red"}, "unknown keys"),
    ({"kernel_sizes": [[3, 3, 3]] * 4}, "needs 2 values"),
])
def test_invalid_configs_are_refused_with_a_reason(change, message):
    with pytest.raises(ValueError, match=message):
        NetworkConfig.from_dict({**small_2d("resunet").to_dict(), **change})


def test_from_json_rejects_non_json():
    with pytest.raises(ValueError, match="not JSON"):
        NetworkConfig.from_json("{network: diffumamba")


def test_from_nnunet_plans_applies_the_umambabot_rule():
    plans = {"configurations": {"3d_fullres": {
        "patch_size": [80, 192, 160], "UNet_base_num_features": 32, "unet_max_num_features": 320,
        "conv_kernel_sizes": [[3, 3, 3]] * 6,
        "pool_op_kernel_sizes": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]],
        "n_conv_per_stage_encoder": [2] * 6, "n_conv_per_stage_decoder": [2] * 5}}}
    config = from_nnunet_plans(plans, network="diffumamba")
    assert config == lung_ct_3d("diffumamba")
    with pytest.raises(ValueError, match="nnU-Net v2 plans"):
        from_nnunet_plans({"configurations": {}}, "3d_fullres")


def test_pooled_projection_is_fp32_under_autocast():
    x = torch.randn(1, 4, 8, 8, 8).bfloat16()
    conv = torch.nn.Conv3d(4, 6, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = project_relu_pool(x, conv.weight, conv.bias, (2, 2, 2))
    assert out.dtype == torch.float32
    out.sum().backward()
    assert conv.weight.grad.dtype == torch.float32 and conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("network", NETWORK_NAMES)
def test_deep_supervision_only_in_training_mode_for_inputs_off_the_stride(network):
    """20^3 is not a multiple of the total stride 8: eval mode gives one full-size tensor (it gave a list whose
    second output was cropped to 10^3), training mode every level cropped to ceil(20 / stride)."""
    config = small_3d(network, num_classes=2)
    model = build_network(config)
    x = torch.randn(1, 1, 20, 20, 20)
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert isinstance(out, torch.Tensor) and out.shape == (1, 2, 20, 20, 20)
    model.train()
    levels = model(x)
    assert [tuple(o.shape[2:]) for o in levels] == [(20,) * 3, (10,) * 3, (5,) * 3]
    model.decoder.deep_supervision = False        # no other switch: the decoder's flag is not consulted alone
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), out)
