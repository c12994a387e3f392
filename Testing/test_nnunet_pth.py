"""Reading nnU-Net v2 checkpoints without unpickling code (nnunet_import.pth; issue 16, first part)."""

import collections
import os

import numpy as np
import pytest
import torch

from diffumamba.nnunet_import.pth import UntrustedCheckpointError, read_nnunet_checkpoint


def nnunet_like_checkpoint() -> dict:
    """What nnU-Net v2's ``nnUNetTrainer.save_checkpoint`` writes (keys, value types), with small tensors."""
    weights = collections.OrderedDict([("encoder.stem.convs.0.conv.weight", torch.randn(8, 1, 3, 3, 3)),
                                       ("decoder.seg_layers.0.bias", torch.randn(2))])
    return {
        "network_weights": weights,
        "optimizer_state": {"state": {0: {"momentum_buffer": torch.zeros(8, 1, 3, 3, 3)}},
                            "param_groups": [{"lr": 1e-2, "momentum": 0.99, "nesterov": True, "params": [0, 1]}]},
        "grad_scaler_state": None,
        "logging": {"mean_fg_dice": [np.float64(0.41), np.float32(0.5)], "ema_fg_dice": [np.float64(0.41)],
                    "train_losses": [-0.3], "epoch_start_timestamps": [1.7e9]},
        "_best_ema": np.float64(0.41),
        "current_epoch": 1000,
        "init_args": {"plans": {"plans_name": "nnUNetPlans"}, "configuration": "3d_fullres", "fold": 0,
                      "dataset_json": {"labels": {"background": 0, "GTV": 1}}, "device": torch.device("cuda")},
        "trainer_name": "nnUNetTrainerDiffUMamba",
        "inference_allowed_mirroring_axes": (0, 1, 2),
    }


def test_reads_what_nnunet_writes(tmp_path):
    original = nnunet_like_checkpoint()
    torch.save(original, tmp_path / "checkpoint_final.pth")
    read = read_nnunet_checkpoint(tmp_path / "checkpoint_final.pth")
    for key, tensor in original["network_weights"].items():
        torch.testing.assert_close(read["network_weights"][key], tensor)
    assert read["trainer_name"] == "nnUNetTrainerDiffUMamba" and read["init_args"]["configuration"] == "3d_fullres"
    assert read["logging"]["mean_fg_dice"] == pytest.approx([0.41, 0.5])
    assert read["inference_allowed_mirroring_axes"] == (0, 1, 2)


def test_reads_numpy_1_pickles(tmp_path):
    """Checkpoints saved under numpy 1 name numpy.core.multiarray.scalar (numpy 2: numpy._core)."""
    path = tmp_path / "checkpoint_best.pth"
    torch.save(nnunet_like_checkpoint(), path, _use_new_zipfile_serialization=False)
    raw = path.read_bytes()
    assert b"numpy._core.multiarray" in raw
    path.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert read_nnunet_checkpoint(path)["_best_ema"] == pytest.approx(0.41)


class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['PAYLOAD_SENTINEL']}",))


def test_refuses_a_pickle_that_would_run_code_without_running_it(tmp_path, monkeypatch):
    sentinel = tmp_path / "ran"
    monkeypatch.setenv("PAYLOAD_SENTINEL", str(sentinel))
    checkpoint = nnunet_like_checkpoint()
    checkpoint["init_args"]["plans"] = Payload()
    torch.save(checkpoint, tmp_path / "checkpoint_final.pth")
    with pytest.raises(UntrustedCheckpointError, match=r"checkpoint_final\.pth: refused, nothing in it was run.*system"):
        read_nnunet_checkpoint(tmp_path / "checkpoint_final.pth")
    assert not sentinel.exists()


def test_truncated_and_foreign_files_get_one_clear_error(tmp_path):
    torch.save(nnunet_like_checkpoint(), tmp_path / "full.pth")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "full.pth").read_bytes()[:3000])
    with pytest.raises(UntrustedCheckpointError, match=r"cut\.pth: not a readable PyTorch checkpoint"):
        read_nnunet_checkpoint(tmp_path / "cut.pth")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "state_dict.pth")
    with pytest.raises(UntrustedCheckpointError, match=r"state_dict\.pth: not an nnU-Net v2 checkpoint"):
        read_nnunet_checkpoint(tmp_path / "state_dict.pth")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        read_nnunet_checkpoint(tmp_path / "missing.pth")
