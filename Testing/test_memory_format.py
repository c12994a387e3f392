"""Training 3D networks in channels-last memory format on the CPU (devices.convolution_memory_format): the speed
fix of the nnU-Net comparison. It must change the speed only, never the numbers (bench/memory_format.py times it)."""

import numpy as np
import pytest
import torch
from conftest import tumour_case

from diffumamba.devices import convolution_memory_format
from diffumamba.nets import NetworkConfig
from diffumamba.training.trainer import Trainer, TrainSettings

CONFIG = dict(network="resunet", spatial_dims=3, in_channels=1, num_classes=2, features_per_stage=[8, 16, 32],
              kernel_sizes=[[3, 3, 3]] * 3, strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]], n_blocks_per_stage=[1, 1, 1],
              n_blocks_per_stage_decoder=[1, 1], patch_size=[8, 32, 32])


def test_format_choice():
    cpu = torch.device("cpu")
    assert convolution_memory_format(cpu, 3) == torch.channels_last_3d
    assert convolution_memory_format(cpu, 2) == torch.contiguous_format
    assert convolution_memory_format(torch.device("cuda"), 3) == torch.contiguous_format


@pytest.mark.parametrize("network", ["resunet", "diffumamba"])
def test_channels_last_training_matches_contiguous_on_a_real_ct(shared_data, tmp_path, monkeypatch, network):
    """Two epochs of two steps on a real lung tumour, once channels-last (the CPU default) and once contiguous:
    the same losses and weights up to float rounding, and the checkpoint loads into a contiguous network."""
    case = tumour_case(shared_data, "lung2")
    config = NetworkConfig(**{**CONFIG, "network": network})
    settings = TrainSettings(epochs=2, iterations_per_epoch=2, validate_every=0, device="cpu", initial_lr=1e-2)
    meta = {"labels": {"background": 0, "GTV": 1}}
    fast = Trainer(config, [case], [], tmp_path / "last", settings, meta=meta)
    assert fast.memory_format == torch.channels_last_3d
    assert fast.network.encoder.stem[0].conv1.weight.is_contiguous(memory_format=torch.channels_last_3d)
    images, _ = fast.batches.draw(fast.batches.make_sampler(fast.train_cases, fast._epoch_randomness(0)))
    assert images.is_contiguous(memory_format=torch.channels_last_3d)
    fast_rows = Trainer(config, [case], [], tmp_path / "last", settings, meta=meta).fit(progress=False)

    monkeypatch.setattr("diffumamba.training.trainer.convolution_memory_format",
                        lambda device, dims: torch.contiguous_format)
    plain = Trainer(config, [case], [], tmp_path / "plain", settings, meta=meta)
    assert plain.network.encoder.stem[0].conv1.weight.is_contiguous()
    plain_rows = plain.fit(progress=False)
    np.testing.assert_allclose([r["train_loss"] for r in fast_rows], [r["train_loss"] for r in plain_rows],
                               rtol=1e-3)
    from diffumamba.checkpoint import load_model

    fast_model, _ = load_model(tmp_path / "last" / "last.safetensors")
    plain_model, _ = load_model(tmp_path / "plain" / "last.safetensors")
    for (name, a), b in zip(fast_model.state_dict().items(), plain_model.state_dict().values()):
        torch.testing.assert_close(a, b, atol=2e-4, rtol=2e-3, msg=name)
