"""``diffumamba experiment``: the statistics on hand-computed numbers, grouped splits, and a whole small
experiment (two networks, two folds) that trains, scores, tabulates and restarts without retraining."""

import csv
import json
import math

import pytest

from diffumamba.cli import main
from diffumamba.experiment.dale_report import partition_lines, partition_summary
from diffumamba.experiment.statistics import compare, markdown_table, paired_difference
from diffumamba.training.splits import kfold_splits, load_or_create_splits


def test_paired_difference_matches_hand_computation():
    result = paired_difference([0.6, 0.7, 0.8], [0.5, 0.5, 0.5])
    half = 4.302653 * 0.1 / math.sqrt(3)          # t(0.975, 2) * sd / sqrt(n)
    assert result["mean"] == pytest.approx(0.2)
    assert (result["ci_low"], result["ci_high"]) == (pytest.approx(0.2 - half, abs=1e-6), pytest.approx(0.2 + half, abs=1e-6))
    assert result["p_wilcoxon"] == pytest.approx(0.25)   # exact: 2 / 2^3
    assert math.isnan(paired_difference([0.6], [0.5])["ci_low"])


def rows(network, values, seed=0):
    return [{"network": network, "label": "GTV", "fold": 0, "seed": seed, "case": f"c{i}", "dice": d,
             "hd95_mm": 10 * (1 - d), "pred_empty": d == 0, "ref_empty": False} for i, d in enumerate(values)]


def test_compare_averages_seeds_per_case_before_pairing():
    table = compare(rows("resunet", [0.5, 0.5]) + rows("diffumamba", [0.6, 0.8]) + rows("diffumamba", [0.8, 0.8], seed=1),
                    baseline="resunet")
    base, mine = table
    assert base["dice"]["mean"] == pytest.approx(0.5) and "vs_baseline" not in base["dice"]
    assert mine["runs"] == 2 and mine["dice"]["n"] == 2
    assert mine["dice"]["mean"] == pytest.approx(0.75)                   # case means 0.7 and 0.8
    assert mine["dice"]["vs_baseline"]["mean"] == pytest.approx(0.25)
    assert mine["hd95_mm"]["vs_baseline"]["mean"] == pytest.approx(-2.5)
    text = markdown_table(table, "resunet")
    assert "| GTV | diffumamba | 2 | 2 | 0.750 ± 0.071 | 2.5 ± 0.7 | +0.250 [" in text and "(baseline)" in text


def test_grouped_cases_are_paired_per_patient():
    both = rows("resunet", [0.5, 0.5, 0.5, 0.5]) + rows("diffumamba", [0.9, 0.5, 0.6, 0.6])
    groups = {"c0": "p1", "c1": "p1", "c2": "p2", "c3": "p2"}
    mine = compare(both, "resunet", groups)[1]
    assert mine["dice"]["n"] == 2 and mine["dice"]["mean"] == pytest.approx(0.65)   # patients 0.7 and 0.6
    assert mine["dice"]["vs_baseline"]["n"] == 2 and mine["dice"]["vs_baseline"]["mean"] == pytest.approx(0.15)
    assert "| label | network | runs | patients |" in markdown_table(compare(both, "resunet", groups), "resunet", "patients")


def test_grouped_splits_keep_a_patient_in_one_fold(tmp_path):
    names = [f"{p:02d}_{t}" for p in (1, 2, 5, 7, 9, 10) for t in ("pre", "post")]
    splits = kfold_splits(names, 3, group_pattern=r"^(\d+)_")
    for split in splits:
        assert len(split["val"]) == 4
        assert not {n[:2] for n in split["train"]} & {n[:2] for n in split["val"]}
    assert sorted(n for s in splits for n in s["val"]) == sorted(names)
    path = tmp_path / "splits_final.json"
    mixed = [{"train": [n for n in names if n != "01_post"], "val": ["01_post"]},
             {"train": ["01_post"], "val": [n for n in names if n != "01_post"]}]
    path.write_text(json.dumps(mixed))             # made without groups: patient 01 on both sides
    with pytest.raises(ValueError, match="one group in training and validation"):
        load_or_create_splits(path, names, 2, group_pattern=r"^(\d+)_")
    assert load_or_create_splits(path, names, 2) == mixed
    with pytest.raises(ValueError, match="does not match the group pattern"):
        kfold_splits(names + ["x"], 3, group_pattern=r"^(\d+)_")


def experiment_args(dataset, tmp_path, *extra):
    return ["experiment", str(dataset), "--preprocessed", str(tmp_path / "pre"), "--results", str(tmp_path / "exp"),
            "--networks", "resunet", "diffumamba", "--folds", "2", "--epochs", "2", "--iterations", "3",
            "--features", "8", "16", "--max-patch", "16", "32", "32", "--lr", "0.01", *extra]


def test_experiment_trains_scores_tabulates_and_restarts(phantoms, tmp_path, capsys):
    assert main(experiment_args(phantoms, tmp_path)) == 0
    out = capsys.readouterr().out
    assert "| tumour | resunet | 2 | 4 |" in out and "| tumour | diffumamba | 2 | 4 |" in out
    results = list(csv.DictReader((tmp_path / "exp" / "results.csv").open()))
    assert len(results) == 8                                    # 2 networks x 4 held-out cases (2 folds)
    assert {r["case"] for r in results if r["network"] == "diffumamba"} == {"c0", "c1", "c2", "c3"}
    assert all(0 <= float(r["dice"]) <= 1 and float(r["train_seconds"]) > 0 for r in results)
    splits = json.loads((phantoms / "splits_final.json").read_text())
    header = json.loads((tmp_path / "exp" / "runs" / "fold1_seed0" / "diffumamba" / "metrics.json").read_text())
    assert {r["case"] for r in header["rows"]} == set(splits[1]["val"])
    summary = json.loads((tmp_path / "exp" / "summary.json").read_text())
    assert summary[1]["dice"]["vs_baseline"]["n"] == 4

    metrics = tmp_path / "exp" / "runs" / "fold0_seed0" / "resunet" / "metrics.json"
    stamp = metrics.stat().st_mtime_ns
    assert main(experiment_args(phantoms, tmp_path)) == 0       # finished runs are reused, not retrained
    assert metrics.stat().st_mtime_ns == stamp
    assert main(experiment_args(phantoms, tmp_path, "--table-only")) == 0
    assert main(experiment_args(phantoms, tmp_path, "--seeds", "1")) == 2
    assert "holds an experiment with other settings" in capsys.readouterr().err


def test_experiment_refuses_a_baseline_it_does_not_run(phantoms, tmp_path, capsys):
    assert main(experiment_args(phantoms, tmp_path, "--baseline", "umambabot")) == 2
    assert "baseline 'umambabot' must be one of the arms" in capsys.readouterr().err


def test_an_experiment_compares_methods_on_the_same_corrupted_cases(phantoms, tmp_path, capsys):
    args = ["experiment", str(phantoms), "--preprocessed", str(tmp_path / "pre"), "--results", str(tmp_path / "exp"),
            "--networks", "resunet", "--methods", "supervised", "dale", "--folds", "2", "--fold-list", "0",
            "--epochs", "2", "--iterations", "2", "--features", "4", "8", "--max-patch", "16", "32", "32",
            "--corrupt-fraction", "0.5", "--dale-warmup", "0.5"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "| tumour | supervised | 1 | 2 |" in out and "| tumour | dale | 1 | 2 |" in out and "(baseline)" in out
    results = list(csv.DictReader((tmp_path / "exp" / "results.csv").open()))
    assert {(r["network"], r["method"]) for r in results} == {("supervised", "supervised"), ("dale", "dale")}
    cases = json.loads((tmp_path / "exp" / "runs" / "fold0_seed0" / "cases.json").read_text())
    assert len(cases["corrupted"]) == 1 and set(cases["corrupted"]) <= set(cases["labeled"]) == set(cases["train"])
    partition = json.loads((tmp_path / "exp" / "runs" / "fold0_seed0" / "dale" / "dale_partition.json").read_text())
    fuzzy = [c["case"] for c in partition["cases"] if c["fuzzy"]]
    hits = sum(name in cases["corrupted"] for name in fuzzy)
    assert (f"- dale: {hits} of {len(fuzzy)} fuzzy picks on corrupted cases (random picks: {len(fuzzy) / 2:.1f}) "
            f"in 1 run; band radius median {partition['band_radius']}") in out
    spec = json.loads((tmp_path / "exp" / "experiment.json").read_text())["spec"]
    assert spec["methods"] == ["supervised", "dale"] and spec["training"]["method_options"] == {"dale": {"warmup": 0.5}}


def _dale_run(root, run, corrupted, fuzzy, radius, arm="dale"):
    folder = root / "runs" / run / arm.replace(":", "_").replace("=", "-")
    folder.mkdir(parents=True)
    labelled = ["a", "b", "c", "d"]
    (root / "runs" / run / "cases.json").write_text(json.dumps({"labeled": labelled, "corrupted": corrupted}))
    (folder / "dale_partition.json").write_text(json.dumps(
        {"band_radius": radius, "cases": [{"case": n, "fuzzy": n in fuzzy} for n in labelled]}))
    (folder / "metrics.json").write_text(json.dumps({"rows": [{"network": arm}]}))


def test_dale_partition_report_counts_picks_on_corrupted_cases_against_chance(tmp_path):
    _dale_run(tmp_path, "fold0_seed0", {"a": "dilate", "b": "shift"}, {"a", "c"}, 3)       # 1 hit; chance 2 x 2/4
    _dale_run(tmp_path, "fold1_seed0", {"d": "erode"}, {"d"}, 7)                            # 1 hit; chance 1 x 1/4
    _dale_run(tmp_path, "fold0_seed0", {"a": "dilate", "b": "shift"}, {"c"}, 5, arm="dale:confidence=none")
    unfinished = tmp_path / "runs" / "fold1_seed0" / "dale_confidence-none"
    _dale_run(tmp_path, "fold1_seed0", {"d": "erode"}, {"d"}, 7, arm="dale:confidence=none")
    (unfinished / "metrics.json").unlink()                                                  # still training
    summary = partition_summary(tmp_path)
    assert summary["dale"] == {"runs": 2, "fuzzy": 3, "on_corrupted": 2, "chance": 1.25, "band_radii": [3, 7]}
    assert summary["dale:confidence=none"]["runs"] == 1 and summary["dale:confidence=none"]["on_corrupted"] == 0
    assert partition_lines(tmp_path)[0] == ("dale: 2 of 3 fuzzy picks on corrupted cases (random picks: 1.2) in 2 "
                                            "runs; band radius median 5 (range 3-7)")


def test_diffcl_needs_unlabelled_cases(phantoms, tmp_path, capsys):
    common = ["--preprocessed", str(tmp_path / "pre"), "--features", "4", "8", "--max-patch", "16", "32", "32"]
    assert main(["experiment", str(phantoms), "--results", str(tmp_path / "exp"), "--networks", "resunet",
                 "--methods", "supervised", "diffcl", *common]) == 2
    assert "Diff-CL needs unlabelled cases" in capsys.readouterr().err
    assert main(["train", str(phantoms), "--run-dir", str(tmp_path / "run"), "--method", "diffcl", "--folds", "2",
                 *common]) == 2
    assert "needs unlabelled cases" in capsys.readouterr().err
    assert not (tmp_path / "exp").exists() and not (tmp_path / "run").exists()


def test_labelling_patients_needs_a_group_pattern(phantoms, tmp_path, capsys):
    """The phantoms' dataset.json has no group pattern: counting labelled patients is refused, not done per case."""
    common = ["--preprocessed", str(tmp_path / "pre"), "--features", "4", "8", "--max-patch", "16", "32", "32",
              "--labeled-fraction", "0.5", "--labeled-unit", "patient"]
    assert main(["experiment", str(phantoms), "--results", str(tmp_path / "exp"), "--networks", "resunet",
                 "--methods", "diffcl", *common]) == 2
    assert "--labeled-unit patient needs a group pattern" in capsys.readouterr().err
    assert main(["train", str(phantoms), "--run-dir", str(tmp_path / "run"), "--method", "diffcl", "--folds", "2",
                 *common]) == 2
    assert "--labeled-unit patient needs a group pattern" in capsys.readouterr().err
    assert not (tmp_path / "exp" / "runs").exists() and not (tmp_path / "run").exists()


def test_an_ablation_experiment_scores_diffcls_branches_and_arms_with_their_own_settings(phantoms, tmp_path, capsys):
    """Issue 17, items 6 and the ablations: a Diff-CL arm is scored three ways (CS, its diffusion branch by DDIM,
    their mean); an arm METHOD:NAME=VALUE trains with that setting (recorded in its checkpoint); a bad arm is refused
    before anything trains."""
    from diffumamba.checkpoint import load_checkpoint

    common = ["experiment", str(phantoms), "--preprocessed", str(tmp_path / "pre"), "--networks", "resunet",
              "--folds", "2", "--fold-list", "0", "--epochs", "1", "--iterations", "2", "--features", "4", "8",
              "--max-patch", "16", "32", "32", "--labeled-fraction", "0.5", "--diffcl-sampling-steps", "2"]
    assert main([*common, "--results", str(tmp_path / "bad"), "--methods", "diffcl:nonsense=1"]) == 2
    assert "arm 'diffcl:nonsense=1'" in capsys.readouterr().err and not (tmp_path / "bad" / "runs").exists()
    assert main([*common, "--results", str(tmp_path / "exp"), "--methods", "diffcl",
                 "diffcl:contrastive=agreement,high_frequency_stages=0"]) == 0
    out = capsys.readouterr().out
    for arm in ("diffcl", "diffcl/diffusion", "diffcl/mean", "diffcl:contrastive=agreement,high_frequency_stages=0"):
        assert f"| tumour | {arm} | 1 | 2 |" in out
    results = list(csv.DictReader((tmp_path / "exp" / "results.csv").open()))
    scores = {r["network"]: float(r["dice"]) for r in results}
    assert len(scores) == 6 and all(0 <= v <= 1 for v in scores.values()) and all(r["band_dice"] for r in results)
    runs = tmp_path / "exp" / "runs" / "fold0_seed0"
    header, _, _ = load_checkpoint(runs / "diffcl_contrastive-agreement_high_frequency_stages-0" / "last.safetensors")
    assert header["training"]["settings"]["method_options"]["diffcl"] == {
        "sampling_steps": 2, "contrastive": "agreement", "high_frequency_stages": 0}
    assert header["network"]["high_frequency_stages"] == []
    assert (runs / "diffcl" / "diffusion.safetensors").exists()
