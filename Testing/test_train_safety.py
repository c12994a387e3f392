"""``train`` never mixes two runs in one folder: an existing run is refused without --resume or --overwrite, a
resume with other options is refused before anything is rewritten, a finished run says so; the optimiser leaves
Mamba's A_log and D undecayed, and AMP's loss scale is checkpointed."""

import csv

import pytest
import torch

from diffumamba.cli import main


def args_for(dataset, tmp_path, *extra, epochs=1, network="resunet", features=("4", "8")):
    return ["train", str(dataset), "--preprocessed", str(tmp_path / "pre"), "--run-dir", str(tmp_path / "run"),
            "--fold", "all", "--epochs", str(epochs), "--iterations", "1", "--features", *features,
            "--max-patch", "16", "32", "32", "--no-amp", "--network", network, "--validate-every", "1", *extra]


def snapshot(run):
    return {p.name: p.read_bytes() for p in sorted(run.iterdir()) if p.is_file()}


def test_an_existing_run_is_refused_without_resume_or_overwrite(phantoms, tmp_path, capsys):
    assert main(args_for(phantoms, tmp_path)) == 0
    run = tmp_path / "run"
    before = snapshot(run)
    capsys.readouterr()
    assert main(args_for(phantoms, tmp_path, epochs=2)) == 2
    err = capsys.readouterr().err
    assert "already holds a training run (last.safetensors, best.safetensors, log.csv, cases.json, tensorboard)" \
        in err and "--resume" in err and "--overwrite" in err and err.count("error:") == 1
    assert snapshot(run) == before
    assert main(args_for(phantoms, tmp_path, "--overwrite", epochs=2)) == 0
    assert "--overwrite: removed last.safetensors" in capsys.readouterr().out
    log = list(csv.DictReader((run / "log.csv").open()))
    assert [int(r["epoch"]) for r in log] == [1, 2]            # a clean log, not 1, 1, 2
    assert len(list((run / "tensorboard").iterdir())) == 1      # one events file: the old one is gone
    assert main(args_for(phantoms, tmp_path, "--overwrite", "--resume")) == 2


@pytest.mark.parametrize("change, message", [
    (["--features", "8", "16"], "was trained with network resunet features [4, 8, 8, 8], not resunet features "
                                "[8, 16, 16, 16]"),
    (["--network", "umambabot"], "was trained with network resunet features [4, 8, 8, 8], not umambabot"),
    (["--seed", "3"], "was trained with --seed 0, not --seed 3"),
    (["--method", "dale"], "was trained with --method supervised, not dale"),
])
def test_resume_with_other_options_is_refused_before_anything_is_rewritten(phantoms, tmp_path, capsys, change,
                                                                           message):
    assert main(args_for(phantoms, tmp_path)) == 0
    run = tmp_path / "run"
    before = snapshot(run)
    capsys.readouterr()
    args = args_for(phantoms, tmp_path, "--resume", epochs=2)
    option, *values = change
    if option in args:
        index = args.index(option)
        args[index + 1:index + 1 + len(values)] = values
    else:
        args += [option, *values]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "resume with the same options or train into a new folder" in err, err
    assert "state_dict" not in err and err.count("error:") == 1
    assert snapshot(run) == before


def test_resuming_a_finished_run_says_it_is_complete(phantoms, tmp_path, capsys):
    assert main(args_for(phantoms, tmp_path, epochs=2)) == 0
    before = snapshot(tmp_path / "run")
    capsys.readouterr()
    assert main(args_for(phantoms, tmp_path, "--resume", epochs=2)) == 0
    out = capsys.readouterr().out
    assert "is complete: trained for 2 epoch(s), --epochs 2; nothing to do" in out
    assert snapshot(tmp_path / "run") == before


def test_mamba_a_log_and_d_get_no_weight_decay():
    from diffumamba.nets import build_network, isotropic_3d
    from diffumamba.training.trainer import parameter_groups

    network = build_network(isotropic_3d("umambabot", n_stages=3, base_features=4, max_features=8))
    groups = parameter_groups(network.named_parameters(), 3e-5)
    flagged = {id(p) for n, p in network.named_parameters() if n.endswith(("A_log", ".D"))}
    assert len(flagged) == 2
    assert {id(p) for p in groups[1]["params"]} == flagged and groups[1]["weight_decay"] == 0
    assert groups[0]["weight_decay"] == 3e-5 and not flagged & {id(p) for p in groups[0]["params"]}
    assert sum(len(g["params"]) for g in groups) == len(list(network.parameters()))


def test_the_trainer_optimiser_does_not_decay_mamba_a_log(tmp_path):
    """One step with zero gradients: decayed weights shrink, A_log and D stay exactly as they were."""
    from test_nonfinite import tiny_case

    from diffumamba.nets import isotropic_3d
    from diffumamba.training.trainer import Trainer, TrainSettings

    config = isotropic_3d("diffumamba", n_stages=3, base_features=4, max_features=8, patch_size=[8, 16, 16])
    trainer = Trainer(config, [tiny_case()], [], tmp_path, TrainSettings(epochs=1, iterations_per_epoch=1,
                      initial_lr=0.1, weight_decay=0.5, device="cpu"), batch_size=1)
    named = dict(trainer.network.named_parameters())
    before = {n: p.detach().clone() for n, p in named.items()}
    for p in trainer.parameters():
        p.grad = torch.zeros_like(p)
    trainer.optimizer.step()
    a_logs = [n for n in named if n.endswith(("A_log", ".D"))]
    assert a_logs and all(torch.equal(named[n], before[n]) for n in a_logs)
    conv = next(n for n in named if n.endswith("weight") and named[n].dim() == 5)
    assert not torch.equal(named[conv], before[conv])


def test_the_amp_grad_scaler_state_is_checkpointed_and_restored(tmp_path):
    from test_nonfinite import tiny_case, tiny_trainer

    from diffumamba.checkpoint import load_checkpoint

    trainer = tiny_trainer(tiny_case(), tmp_path, epochs=2)
    trainer.settings.epochs = 1
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=256.0, growth_interval=1)   # enabled on CPU
    trainer.fit(progress=False)
    saved = trainer.scaler.state_dict()
    assert saved["scale"] == 1024.0 and saved["_growth_tracker"] == 0   # two finite steps, two growths
    header = load_checkpoint(tmp_path / "last.safetensors")[0]
    assert header["scaler"] == saved
    resumed = tiny_trainer(tiny_case(), tmp_path, epochs=2)
    resumed.scaler = torch.amp.GradScaler("cpu", init_scale=256.0, growth_interval=1)
    assert resumed.resume()
    assert resumed.scaler.state_dict() == saved


@pytest.mark.parametrize("n_stages, deep", [(2, True), (2, False), (3, True), (3, False)])
def test_ddp_searches_unused_parameters_exactly_when_some_get_no_gradient(tmp_path, n_stages, deep):
    """Measured under torchrun (gloo): with find_unused_parameters=False every network of 3+ stages fails its
    second step, since the zero-weight deepest head (or, without deep supervision, every lower head) gets no
    gradient; the rule must say so, and say False where every parameter is used."""
    from test_nonfinite import tiny_case

    from diffumamba.nets import isotropic_3d
    from diffumamba.training.trainer import Trainer, TrainSettings, has_unused_parameters

    config = isotropic_3d("resunet", n_stages=n_stages, base_features=4, max_features=8,
                          patch_size=[8, 16, 16]).replace(deep_supervision=deep)
    trainer = Trainer(config, [tiny_case()], [], tmp_path, TrainSettings(epochs=1, iterations_per_epoch=1,
                      device="cpu", augment=False), batch_size=1)
    trainer.method.begin_epoch(0, 0)
    trainer.method.loss()[0].backward()
    unused = [n for n, p in trainer.network.named_parameters() if p.grad is None]
    assert has_unused_parameters(trainer.config, trainer.loss) == bool(unused)
