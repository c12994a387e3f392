"""Checkpoints: self-describing, exact, resumable, and never unpickled."""

import json
import pickle

import pytest
import torch

from diffumamba.nets import build_network, isotropic_3d
from diffumamba.checkpoint import FORMAT, load_checkpoint, load_model, save_checkpoint, weights_only_bytes


def small():
    config = isotropic_3d("diffumamba", n_stages=3, base_features=4, max_features=8).replace(deep_supervision=False)
    return build_network(config), config


def small_plan(config):
    """A complete plan for ``small``'s network, as training stores it (``Plan.checkpoint_meta``)."""
    return {"target_spacing": [2.0, 1.0, 1.0], "patch_size": [8, 8, 8], "batch_size": 2, "median_shape": [16, 32, 32],
            "network": config.to_dict(), "channel_names": ["CT"], "labels": {"background": 0, "GTV": 1},
            "intensities": [{"mean": 40.0, "std": 90.0, "percentile_00_5": -200.0, "percentile_99_5": 250.0}],
            "fingerprint_hash": "test", "image_order": 3, "linear_labels": False, "inference": {},
            "task": "segmentation", "separate_z_order": None}


def sgd(model):
    return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.99, nesterov=True, weight_decay=3e-5)


def step(model, optimizer, x):
    optimizer.zero_grad()
    model(x).square().mean().backward()
    optimizer.step()


def test_model_round_trip_is_exact_and_self_describing(tmp_path):
    model, config = small()
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, model, config, {"labels": {"background": 0, "GTV": 1}, "plan": small_plan(config)})
    loaded, header = load_model(path)
    assert header["format"] == FORMAT and header["labels"]["GTV"] == 1 and header["network"] == config.to_dict()
    assert header["provenance"]["packages"]["torch"] in torch.__version__
    assert header["provenance"]["diffumamba"]
    x = torch.randn(1, 1, 8, 8, 8)
    model.eval()
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert not list(tmp_path.glob(".*.tmp"))


def test_resume_continues_exactly(tmp_path):
    torch.manual_seed(0)
    model, config = small()
    optimizer = sgd(model)
    batches = [torch.randn(1, 1, 8, 8, 8) for _ in range(4)]
    for x in batches[:2]:
        step(model, optimizer, x)
    save_checkpoint(tmp_path / "last.safetensors", model, config, {"training": {"epoch": 2}}, optimizer)
    for x in batches[2:]:
        step(model, optimizer, x)

    header, state, optim_state = load_checkpoint(tmp_path / "last.safetensors")
    resumed, _ = small()
    resumed.load_state_dict(state)
    resumed_optimizer = sgd(resumed)
    resumed_optimizer.load_state_dict(optim_state)
    assert header["training"]["epoch"] == 2
    for x in batches[2:]:
        step(resumed, resumed_optimizer, x)
    for a, b in zip(model.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


class Exploit:
    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.target),))


def test_pickles_are_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    exploit = Exploit()
    exploit.target = str(marker)
    for name, payload in (("model.pt", pickle.dumps(exploit, protocol=2)),
                          ("model.safetensors", pickle.dumps(exploit, protocol=5))):
        (tmp_path / name).write_bytes(payload)
        with pytest.raises(ValueError, match="never unpickles"):
            load_model(tmp_path / name)
    assert not marker.exists()


def test_unreadable_or_foreign_files_fail_clearly(tmp_path):
    from safetensors.torch import save_file

    (tmp_path / "garbage.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_model(tmp_path / "garbage.safetensors")
    torch.save(small()[0].state_dict(), tmp_path / "weights.bin")       # torch's zip pickle, any name
    with pytest.raises(ValueError, match="never unpickles"):
        load_model(tmp_path / "weights.bin")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(ValueError, match="not a DiffUMambaSeg checkpoint"):
        load_model(tmp_path / "foreign.safetensors")


def test_weights_that_do_not_match_the_config_are_refused(tmp_path):
    model, config = small()
    other = config.replace(features_per_stage=[4, 8, 16])
    save_checkpoint(tmp_path / "bad.safetensors", model, other, {})
    with pytest.raises(ValueError, match="do not match its network config"):
        load_model(tmp_path / "bad.safetensors")


def test_a_checkpoint_whose_header_length_starts_like_a_pickle_loads(tmp_path):
    """A safetensors header of 128 + 256k bytes makes the file's first byte 0x80, a pickle's first byte: such a
    checkpoint (met in a real training run) must load, and a real pickle must still be refused."""
    model, config = small()
    path = tmp_path / "model.safetensors"
    for padding in range(300):
        save_checkpoint(path, model, config, {"note": "x" * padding})
        if path.read_bytes()[:1] == b"\x80":
            break
    assert path.read_bytes()[:1] == b"\x80"
    loaded, header = load_model(path)
    assert header["note"].startswith("x")
    (tmp_path / "pickle.safetensors").write_bytes(pickle.dumps({"a": 1}, protocol=4))
    with pytest.raises(ValueError, match="never unpickles"):
        load_model(tmp_path / "pickle.safetensors")


def test_a_corrupt_diffumamba_header_is_named(tmp_path):
    """A damaged header used to surface as a bare JSON error without the file's name."""
    import struct

    header = json.dumps({"__metadata__": {"diffumamba": "{not json"}}).encode()
    path = tmp_path / "damaged.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    with pytest.raises(ValueError, match=r"damaged.safetensors has a corrupt diffumamba header"):
        load_checkpoint(path)


ABSURD_PLANS = [  # (field, value, what the one error line must say besides the file and the field)
    ("patch_size", [4096, 4096, 4096], "68,719,476,736 voxels"),      # predict: a 275 GB allocation
    ("patch_size", [0, 0, 0], "positive integers"),                   # predict: ran and segmented wrongly
    ("patch_size", [-16, 64, 64], "positive integers"),
    ("patch_size", "big", "positive integers"),
    ("patch_size", [10, 8, 8], "not a multiple of the network's total stride [4, 4, 4]"),
    ("target_spacing", [0, 0, 0], "outside 0.05 to 100 mm"),          # predict: ZeroDivisionError
    ("target_spacing", [0.001] * 3, "outside 0.05 to 100 mm"),        # predict: ITK's ResampleImageFilter failed
    ("target_spacing", [float("nan"), 1.0, 1.0], "outside 0.05 to 100 mm"),
    ("target_spacing", [1.0, 1.0], "need 3 values each for the 3D network"),
    ("channel_names", ["CT", "PET"], "one statistics object per entry of channel_names (2)"),
    ("network", {"in_channels": 2}, "takes 2 input channels, the plan's channel_names give 1"),
    ("network", {"num_classes": 3}, "3 output classes"),
    ("network", {"patch_size": [16, 16, 16]}, "differs from the network's patch_size"),
    ("labels", {"background": 0, "GTV": 2}, "background = 0 then 1, 2"),
    ("intensities", [{"mean": float("nan"), "std": 1.0, "percentile_00_5": 0, "percentile_99_5": 1}], "finite"),
    ("image_order", 2, "(0, 1, 3)"),
    ("batch_size", 0, "positive integer"),
    ("task", "detection", "segmentation, propagation, correction"),
]


@pytest.mark.parametrize("field,value,expected", ABSURD_PLANS, ids=[f"{f}={v}" for f, v, _ in ABSURD_PLANS])
def test_a_checkpoint_whose_plan_is_absurd_is_refused_by_name(tmp_path, field, value, expected):
    """A header's plan went unchecked into resampling and the sliding window (issue 28, D8/D9): now the checkpoint is
    refused where it is read, in one line naming the file and the field."""
    model, config = small()
    save_checkpoint(tmp_path / "good.safetensors", model, config, {"plan": small_plan(config)})
    header, state, _ = load_checkpoint(tmp_path / "good.safetensors")
    header["plan"][field] = {**header["plan"][field], **value} if field == "network" else value
    path = tmp_path / "edited.safetensors"
    path.write_bytes(weights_only_bytes(header, state))
    with pytest.raises(ValueError) as refused:
        load_model(path)
    message = str(refused.value)
    assert len(message.splitlines()) == 1 and str(path) in message and field in message and expected in message, \
        message


def test_a_plan_from_a_checkpoint_passes_and_a_plan_less_header_is_not_checked(tmp_path):
    """The complete plans training writes load; a header without a plan (weights saved for a test or a benchmark)
    has nothing to validate."""
    model, config = small()
    save_checkpoint(tmp_path / "m.safetensors", model, config, {"plan": small_plan(config)})
    assert load_model(tmp_path / "m.safetensors")[1]["plan"]["patch_size"] == [8, 8, 8]
    save_checkpoint(tmp_path / "bare.safetensors", model, config, {})
    assert "plan" not in load_model(tmp_path / "bare.safetensors")[1]
