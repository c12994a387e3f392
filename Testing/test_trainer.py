"""Supervised training on a real lung tumour: the loss falls, validation runs, and resume is exact."""

import csv

import numpy as np
import pytest
import torch
from conftest import tumour_case

from diffumamba.nets import isotropic_3d
from diffumamba.checkpoint import load_model
from diffumamba.training.trainer import Trainer, TrainSettings, default_learning_rate

@pytest.fixture(scope="module")
def tumour_region(shared_data):
    return tumour_case(shared_data, "lung2")


def make_trainer(case, out_dir, epochs, seed=0):
    config = isotropic_3d("diffumamba", n_stages=3, base_features=8, max_features=16, patch_size=[16, 48, 48])
    settings = TrainSettings(epochs=epochs, iterations_per_epoch=6, initial_lr=0.01, validate_every=2, seed=seed,
                             device="cpu")
    return Trainer(config, [case], [case], out_dir, settings, batch_size=2, meta={"labels": {"background": 0, "GTV": 1}})


def test_default_learning_rates():
    assert default_learning_rate("diffumamba") == 1e-3 and default_learning_rate("resunet") == 1e-2


def test_training_on_a_real_tumour_lowers_the_loss(tumour_region, tmp_path):
    trainer = make_trainer(tumour_region, tmp_path, epochs=6)
    rows = trainer.fit(progress=False)
    losses = [r["train_loss"] for r in rows]
    assert np.mean(losses[-2:]) < np.mean(losses[:2])
    assert [r["lr"] for r in rows] == pytest.approx([0.01 * (1 - e / 6) ** 0.9 for e in range(6)])
    validated = [r["val_dice"] for r in rows if not np.isnan(r["val_dice"])]
    assert len(validated) == 3 and all(0 <= d <= 1 for d in validated)
    assert validated[-1] > validated[0] and validated[-1] > 0.4    # seeded: 0.46 -> 0.57 -> 0.60
    log = list(csv.DictReader((tmp_path / "log.csv").open()))
    assert [int(r["epoch"]) for r in log] == list(range(1, 7))
    # epochs without validation leave the cell empty (not "nan"); validated epochs hold the Dice
    assert [r["val_dice"] for r in log if r["val_dice"] != ""] == [repr(d) for d in validated]
    assert sum(r["val_dice"] == "" for r in log) == 3
    model, header = load_model(tmp_path / "best.safetensors")
    assert header["labels"]["GTV"] == 1 and header["training"]["best_dice"] == max(validated)
    assert (tmp_path / "last.safetensors").exists()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert {"train_loss", "lr", "val_dice"} <= set(events.Tags()["scalars"])
    assert [e.value for e in events.Scalars("train_loss")] == pytest.approx(losses)


def test_resume_after_interruption_gives_the_same_weights(tumour_region, tmp_path):
    straight = make_trainer(tumour_region, tmp_path / "a", epochs=3)
    straight.fit(progress=False)

    first = make_trainer(tumour_region, tmp_path / "b", epochs=3)
    first.settings.epochs = 1                 # "killed" after the first epoch's checkpoint
    first.fit(progress=False)
    resumed = make_trainer(tumour_region, tmp_path / "b", epochs=3)
    assert resumed.resume() and resumed.start_epoch == 1
    resumed.fit(progress=False)
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=lambda m, name=name: f"{name}: {m}")
