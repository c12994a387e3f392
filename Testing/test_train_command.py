"""``diffumamba train`` end to end on a small synthetic dataset; splits and limited-data subsets."""

import csv
import json

import pytest

from diffumamba.cli import main
from diffumamba.checkpoint import load_model
from diffumamba.training.splits import fold_cases, kfold_splits, load_or_create_splits, subset


def train_args(dataset, tmp_path, *extra):
    return ["train", str(dataset), "--preprocessed", str(tmp_path / "pre"), "--run-dir", str(tmp_path / "run"),
            "--folds", "2", "--epochs", "3", "--iterations", "4", "--validate-every", "1", "--features", "8", "16",
            "--max-patch", "16", "32", "32", "--lr", "0.01", *extra]


def test_train_command_writes_splits_checkpoints_and_log(phantoms, tmp_path, capsys):
    assert main(train_args(phantoms, tmp_path)) == 0
    splits = json.loads((phantoms / "splits_final.json").read_text())
    cases = json.loads((tmp_path / "run" / "cases.json").read_text())
    assert cases["train"] == splits[0]["train"] and cases["val"] == splits[0]["val"]
    log = list(csv.DictReader((tmp_path / "run" / "log.csv").open()))
    assert len(log) == 3 and float(log[-1]["train_loss"]) < float(log[0]["train_loss"])
    model, header = load_model(tmp_path / "run" / "best.safetensors")
    assert header["labels"] == {"background": 0, "tumour": 1} and header["plan"]["patch_size"] == [16, 32, 32]
    assert header["cases"]["val"] == splits[0]["val"] and len(header["fingerprint_hash"]) == 64
    assert "patch [16, 32, 32], lr 0.01" in capsys.readouterr().out


def test_train_command_resumes(phantoms, tmp_path, capsys):
    assert main(train_args(phantoms, tmp_path, "--resume")) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(train_args(phantoms, tmp_path)) == 0
    args = train_args(phantoms, tmp_path, "--resume")
    args[args.index("--epochs") + 1] = "4"
    assert main(args) == 0
    assert "resuming after epoch 3" in capsys.readouterr().out
    assert len(list(csv.DictReader((tmp_path / "run" / "log.csv").open()))) == 4


def test_kfold_splits_cover_every_case_once():
    names = [f"case{i:02d}" for i in range(11)]
    splits = kfold_splits(names, 5)
    assert sorted(n for s in splits for n in s["val"]) == names
    assert all(set(s["train"]).isdisjoint(s["val"]) for s in splits)
    assert kfold_splits(names, 5) == splits
    with pytest.raises(ValueError, match="cannot make 5 folds from 3"):
        kfold_splits(names[:3], 5)


def test_saved_splits_are_reused_and_checked(tmp_path):
    path, names = tmp_path / "splits_final.json", ["a", "b", "c", "d"]
    first = load_or_create_splits(path, names, 2)
    assert load_or_create_splits(path, names, 2) == first
    with pytest.raises(ValueError, match="does not cover"):
        load_or_create_splits(path, names + ["e"], 2)
    with pytest.raises(ValueError, match="has 2 folds"):
        load_or_create_splits(path, names, 4)
    assert fold_cases(first, names, "all") == (names, names)
    with pytest.raises(ValueError, match="--fold must be"):
        fold_cases(first, names, "7")


def test_limited_data_subset_is_seeded():
    names = [f"c{i}" for i in range(25)]
    assert len(subset(names, 0.16, 0)) == 4 and subset(names, 0.16, 0) == subset(names, 0.16, 0)
    assert subset(names, 0.16, 0) != subset(names, 0.16, 1)
    with pytest.raises(ValueError, match="train-fraction"):
        subset(names, 0, 0)


def test_two_process_ddp_training_on_cpu(phantoms, tmp_path):
    """torchrun with 2 CPU processes (gloo): rank 0 writes the log and checkpoints, both ranks finish."""
    import os
    import subprocess
    import sys

    args = train_args(phantoms, tmp_path)[1:]
    args[args.index("--epochs") + 1] = "2"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", "29517", "-m", "diffumamba", "train", *args],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("checkpoints and log:") == 2
    log = list(csv.DictReader((tmp_path / "run" / "log.csv").open()))
    assert [int(r["epoch"]) for r in log] == [1, 2]                 # written once, by rank 0
    model, header = load_model(tmp_path / "run" / "last.safetensors")
    assert header["training"]["epoch"] == 2


def test_two_process_diffcl_training_on_cpu(phantoms, tmp_path):
    """Diff-CL's denoiser runs outside DistributedDataParallel: its gradients are averaged by the trainer."""
    import os
    import subprocess
    import sys

    args = train_args(phantoms, tmp_path)[1:]
    args[args.index("--epochs") + 1] = "1"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", "29518", "-m", "diffumamba", "train", *args, "--method", "diffcl",
                           "--labeled-fraction", "0.5"], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    model, header = load_model(tmp_path / "run" / "last.safetensors")
    assert header["method"]["name"] == "diffcl" and header["network"]["high_frequency_stages"]
