"""DALE and Diff-CL on real lung tumours (pyradiomics lung2, and lung1 as the unlabelled scan): short runs whose
validation Dice improves over its start, the logged confidences and partition, and exact resume."""

import json

import numpy as np
import pytest
import torch
from conftest import tumour_case

from diffumamba.nets import isotropic_3d
from diffumamba.checkpoint import load_model
from diffumamba.training.label_noise import corrupt_label
from diffumamba.training.sampling import TrainingCase
from diffumamba.training.trainer import Trainer, TrainSettings


@pytest.fixture(scope="module")
def lung2(shared_data):
    return tumour_case(shared_data, "lung2")


@pytest.fixture(scope="module")
def lung1(shared_data):
    return tumour_case(shared_data, "lung1", half_depth=10, half_width=40)


def noisy_copy(case):
    """The same scan with its GTV grown by 4 voxels in every direction: a coarse second contour."""
    label = corrupt_label(case.label, "dilate", 4, np.random.default_rng(0))
    return TrainingCase.from_arrays("lung2_grown", case.data, label)


def make_trainer(method, train, val, out_dir, epochs, unlabeled=(), options=None, iterations=6):
    config = isotropic_3d("diffumamba", n_stages=3, base_features=8, max_features=16, patch_size=[16, 48, 48])
    settings = TrainSettings(epochs=epochs, iterations_per_epoch=iterations, initial_lr=0.01, validate_every=2,
                             seed=0, device="cpu", method=method, method_options=options or {})
    return Trainer(config, train, val, out_dir, settings, batch_size=2, meta={"labels": {"background": 0, "GTV": 1}},
                   unlabeled_cases=unlabeled)


DALE = {"dale": {"warmup": 0.34, "partition_patches": 2}}


def test_dale_learns_flags_the_coarse_contour_and_logs_its_confidences(lung2, tmp_path):
    trainer = make_trainer("dale", [lung2, noisy_copy(lung2)], [lung2], tmp_path, epochs=6, options=DALE)
    rows = trainer.fit(progress=False)
    validated = [r["val_dice"] for r in rows if not np.isnan(r["val_dice"])]
    assert validated[-1] > validated[0] and validated[-1] > 0.4
    partition = {r["case"]: r for r in partition_record(tmp_path)["cases"]}
    assert partition["lung2_grown"]["fuzzy"] and not partition["lung2"]["fuzzy"]
    assert partition["lung2_grown"]["error_rate"] > partition["lung2"]["error_rate"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"dale/confidence_mean", "dale/align_loss", "dale/fuzzy_cases", "dale/phase"} <= tags
    confidence = [e.value for e in events.Scalars("dale/confidence_mean")]
    assert all(0.1 <= c <= 1 for c in confidence)
    assert [e.value for e in events.Scalars("dale/fuzzy_cases")][-1] == 1
    model, header = load_model(tmp_path / "last.safetensors")      # the plain network: predict runs it
    assert header["method"]["name"] == "dale" and not any(k.startswith("teacher") for k in model.state_dict())
    shell, correct = confidence_on_the_grown_shell(trainer, lung2)
    assert shell < correct - 0.15 and correct > 0.9                # issue 17, item 3: loss consistency doubts it
    assert 3 <= partition_record(tmp_path)["band_radius"] <= 5      # derived: the label was grown by 4


def partition_record(run_dir):
    return json.loads((run_dir / "dale_partition.json").read_text())


def confidence_on_the_grown_shell(trainer, clean):
    """Mean loss-consistency omega, on a patch of the grown copy centred on the tumour, of its wrongly labelled
    shell and of the rest of its fuzzy band, from the trained run's student, teacher and loss history."""
    from diffumamba.training.methods.dale_confidence import loss_consistency_confidence, voxel_label_loss
    from diffumamba.training.methods.dale_losses import boundary_band

    dale = trainer.method
    grown = next(case for case in trainer.train_cases if case.name == "lung2_grown")
    sampler = trainer.batches.make_sampler([grown], 0, for_draw=False)
    centre = np.argwhere(clean.label > 0).mean(0).astype(int)
    start = [int(c - p // 2) for c, p in zip(centre, trainer.config.patch_size)]
    image, label = sampler.crop(grown, start)
    _, truth = sampler.crop(clean, start)
    images, labels = torch.from_numpy(image[None]).float(), torch.from_numpy(label[None, None].astype(np.int64))
    teacher = dale.teacher.probabilities(images)
    trainer.network.eval()
    with torch.no_grad():
        outputs = trainer.network(images)
    logits = outputs[0] if isinstance(outputs, (list, tuple)) else outputs
    stable = [dale.case_index[n] for n, phi in dale.partition.items() if phi < 0.5]
    omega = loss_consistency_confidence(voxel_label_loss(logits, teacher, labels),
                                        dale.history.means()[[dale.case_index[grown.name]]], labels,
                                        dale.history.reference(stable), 0.5, 0.1)[0]
    shell = torch.from_numpy((label > 0) & (truth == 0))
    rest = boundary_band(labels, dale.band)[0] & ~shell
    return float(omega[shell].mean()), float(omega[rest].mean())


def test_diffcl_learns_from_a_labelled_and_an_unlabelled_scan(lung2, lung1, tmp_path):
    trainer = make_trainer("diffcl", [lung2], [lung2], tmp_path, epochs=4, unlabeled=[lung1])
    assert trainer.config.high_frequency_stages == [1]
    assert trainer.unlabeled_cases[0].label.max() == 0                  # its label is never seen
    rows = trainer.fit(progress=False)
    validated = [r["val_dice"] for r in rows if not np.isnan(r["val_dice"])]
    assert validated[-1] > validated[0] and validated[-1] > 0.3
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert {"diffcl/cnn_pseudo", "diffcl/diffusion_supervised", "diffcl/contrastive", "diffcl/pseudo_weight"} \
        <= set(events.Tags()["scalars"])
    weights = [e.value for e in events.Scalars("diffcl/pseudo_weight")]
    assert weights == sorted(weights) and weights[-1] == pytest.approx(0.1)       # ramped up to pseudo_weight
    model, header = load_model(tmp_path / "last.safetensors")      # CS with its high-frequency module
    assert header["network"]["high_frequency_stages"] == [1] and "high_frequency.1.attention.weight" in model.state_dict()
    # Issue 17, item 6: the diffusion branch is exported and segments a scan like any checkpoint, the same way twice.
    from diffumamba.inference.sliding_window import sliding_window_logits
    from diffumamba.nets.mask_diffusion import DiffusionSegmenter

    diffusion, header = load_model(tmp_path / "diffusion.safetensors")
    assert isinstance(diffusion, DiffusionSegmenter) and header["diffusion"]["sampling_steps"] == 10
    torch.testing.assert_close(diffusion.denoiser.state_dict(), trainer.method.denoiser.state_dict())
    first, second = (sliding_window_logits(diffusion, lung2.data, [16, 48, 48]) for _ in range(2))
    assert torch.equal(first, second) and first.shape == (2, *lung2.data.shape[1:])
    patch = torch.from_numpy(lung2.data[None, :, :16, :48, :48]).float()
    with torch.no_grad():
        log_probabilities = diffusion(patch)                      # log DDIM probabilities: a softmax gives them back
    torch.testing.assert_close(log_probabilities.exp().sum(1), torch.ones(1, 16, 48, 48), atol=1e-5, rtol=0)


def test_unlabelled_patches_are_centred_on_the_cnns_pseudo_foreground(lung2, lung1, tmp_path):
    """Issue 17, item 5: CS segments the unlabelled scan; its foreground becomes the scan's sampling locations, the
    forced-foreground patches of the unlabelled sampler are centred on them, and they survive a resume."""
    from diffumamba.inference.sliding_window import sliding_window_logits

    trainer = make_trainer("diffcl", [lung2], [], tmp_path, epochs=2, unlabeled=[lung1], iterations=4)
    trainer.fit(progress=False)                  # epoch 1 (pseudo_label_every 2): not refreshed yet
    unlabelled = trainer.unlabeled_cases[0]
    assert unlabelled.locations == {}
    trainer.method.begin_epoch(2, seed=5)
    prediction = sliding_window_logits(trainer.network, unlabelled.data, trainer.config.patch_size, 0.0).argmax(0)
    foreground = prediction.numpy() > 0
    where = unlabelled.locations[1]
    assert len(where) == min(int(foreground.sum()), 10_000) > 0 and foreground[tuple(where.T)].all()
    sampler = trainer.method.unlabelled
    assert sampler.n_foreground == 1 and unlabelled.label.max() == 0
    for _ in range(5):                            # the forced patch holds a pseudo-foreground voxel near its centre
        start = np.array(sampler.patch_start(unlabelled, foreground=True))
        inside = ((where >= start) & (where < start + np.array(trainer.config.patch_size))).all(1)
        assert inside.any()
    tensors, info = trainer.method.state()
    again = make_trainer("diffcl", [lung2], [], tmp_path / "again", epochs=2, unlabeled=[lung1], iterations=4)
    again.method.load_state(tensors, info)
    assert np.array_equal(again.unlabeled_cases[0].locations[1], where)


def test_diffcl_refuses_to_run_without_unlabelled_cases(lung2, tmp_path):
    with pytest.raises(ValueError, match="unlabelled"):
        make_trainer("diffcl", [lung2], [], tmp_path, epochs=1)


@pytest.mark.parametrize("method", ["dale", "diffcl"])
def test_resume_is_exact(method, lung2, lung1, tmp_path):
    options = {"dale": {"warmup": 0.25, "partition_patches": 2}} if method == "dale" else {}
    unlabeled = [lung1] if method == "diffcl" else []
    train = [lung2, noisy_copy(lung2)] if method == "dale" else [lung2]
    straight = make_trainer(method, train, [], tmp_path / "a", 4, unlabeled, options, iterations=2)
    straight.fit(progress=False)
    first = make_trainer(method, train, [], tmp_path / "b", 4, unlabeled, options, iterations=2)
    save = first._save

    def killed_after_the_second_epoch(name, epoch):    # DALE: in its stable phase, before its first fuzzy one
        save(name, epoch)
        if name == "last.safetensors" and epoch == 2:
            raise KeyboardInterrupt

    first._save = killed_after_the_second_epoch
    with pytest.raises(KeyboardInterrupt):
        first.fit(progress=False)
    resumed = make_trainer(method, train, [], tmp_path / "b", 4, unlabeled, options, iterations=2)
    assert resumed.resume() and resumed.start_epoch == 2
    resumed.fit(progress=False)
    for (name, a), b in zip(straight.network.state_dict().items(), resumed.network.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=lambda m, name=name: f"{name}: {m}")
    for (name, a), b in zip(straight.method_modules.state_dict().items(), resumed.method_modules.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=lambda m, name=name: f"{name}: {m}")


def test_a_checkpoint_of_another_method_is_not_resumed(lung2, tmp_path):
    make_trainer("supervised", [lung2], [], tmp_path, 1, iterations=1).fit(progress=False)
    with pytest.raises(ValueError, match="trained with --method supervised"):
        make_trainer("dale", [lung2], [], tmp_path, 2, iterations=1).resume()


@pytest.mark.parametrize("network", ["resunet", "umambabot", "diffumamba"])
@pytest.mark.parametrize("method", ["dale", "diffcl"])
def test_every_method_trains_every_network(method, network, lung2, lung1, tmp_path):
    config = isotropic_3d(network, n_stages=3, base_features=4, max_features=8, patch_size=[8, 32, 32])
    settings = TrainSettings(epochs=2, iterations_per_epoch=1, seed=0, device="cpu", method=method,
                             method_options={"dale": {"warmup": 0.5, "partition_patches": 1}})
    trainer = Trainer(config, [lung2], [], tmp_path, settings, batch_size=1, meta={"labels": {"background": 0, "GTV": 1}},
                      unlabeled_cases=[lung1] if method == "diffcl" else [])
    rows = trainer.fit(progress=False)
    assert len(rows) == 2 and all(np.isfinite(r["train_loss"]) for r in rows)
    model, header = load_model(tmp_path / "last.safetensors")
    assert header["network"]["network"] == network


def test_the_supervised_control_trains_the_same_network_as_diffcls_cnn_branch(lung2, lung1, tmp_path):
    """Issue 17, item 8: 'supervised-hf' has Diff-CL's high-frequency stages (the same option sets both) and
    learns them from the labelled scan alone, so an experiment can separate the module from the method."""
    from diffumamba.experiment.runner import experiment_arms

    control = make_trainer("supervised-hf", [lung2], [lung2], tmp_path / "control", epochs=2,
                           options={"diffcl": {"high_frequency_stages": 2}})
    diffcl = make_trainer("diffcl", [lung2], [lung2], tmp_path / "diffcl", epochs=1, unlabeled=[lung1],
                          options={"diffcl": {"high_frequency_stages": 2}})
    assert control.config.high_frequency_stages == diffcl.config.high_frequency_stages == [0, 1]
    assert not control.unlabeled_cases
    before = control.model.high_frequency["1"].forward_scan.mamba.in_proj.weight.detach().clone()
    rows = control.fit(progress=False)
    assert all(np.isfinite(r["train_loss"]) for r in rows)
    assert not torch.equal(control.model.high_frequency["1"].forward_scan.mamba.in_proj.weight, before)
    model, header = load_model(tmp_path / "control" / "last.safetensors")
    assert header["network"]["high_frequency_stages"] == [0, 1] and "high_frequency.0.attention.weight" in model.state_dict()
    assert [name for name, _, _ in experiment_arms(["diffumamba"], ["supervised", "supervised-hf", "diffcl"])] == \
        ["supervised", "supervised-hf", "diffcl"]


def test_every_process_of_a_torchrun_computes_the_same_dale_partition(lung2, tmp_path):
    """Issue 17, item 7: the epoch seed includes the rank; DALE's partition estimate must not depend on it."""
    grown = noisy_copy(lung2)
    partitions = []
    for rank in (0, 1, 3):
        trainer = make_trainer("dale", [lung2, grown], [], tmp_path / f"rank{rank}", epochs=4, options=DALE)
        trainer.rank = rank                                # what torchrun's process `rank` would have
        epoch = trainer.method.warmup_epochs()             # the first epoch after warm-up partitions the cases
        trainer.method.begin_epoch(epoch, trainer._epoch_randomness(epoch))
        partitions.append(trainer.method.partition)
    assert partitions[0] == partitions[1] == partitions[2] and set(partitions[0]) == {"lung2", "lung2_grown"}
