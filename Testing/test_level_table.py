"""The nodule test bed's table over label conditions (experiment/level_table.py): folders of one condition pooled,
the ceiling added to every condition, paired differences by patient, and folders that are not paired refused."""

import json

import pytest

from diffumamba.experiment.level_table import CEILING, level_table, main


def _folder(root, name, dice_by_arm, plan="p1", seeds=(0, 1), corrupted=()):
    """An experiment folder with finished runs: arm -> {case: dice}; two seeds with the same values +/- 0.01."""
    folder = root / name
    spec = {"networks": ["diffumamba"], "baseline": next(iter(dice_by_arm)), "methods": list(dice_by_arm),
            "n_folds": 5, "folds": [0], "seeds": list(seeds), "train_fraction": 1.0,
            "group_pattern": r"^(P\d+)_", "batch_size": 2, "training": {"epochs": 2},
            "label_noise": "readers", "labeled_unit": "case"}
    (folder).mkdir(parents=True)
    (folder / "experiment.json").write_text(json.dumps({"spec": spec, "plan_hash": plan, "dataset": "d"}))
    for arm, cases in dice_by_arm.items():
        for seed in seeds:
            run = folder / "runs" / f"fold0_seed{seed}" / arm.replace(":", "_").replace("=", "-")
            run.mkdir(parents=True)
            rows = [{"network": arm, "case": case, "label": "lesion", "fold": 0, "seed": seed,
                     "dice": d + (0.01 if seed else -0.01), "band_dice": d, "hd95_mm": 2.0, "pred_empty": False,
                     "ref_empty": False, "train_seconds": 10.0 + 2 * seed} for case, d in cases.items()]
            (run / "metrics.json").write_text(json.dumps({"rows": rows}))
            if arm.startswith("dale"):                          # DALE judged the first case fuzzy
                partition = [{"case": case, "fuzzy": i == 0} for i, case in enumerate(cases)]
                (run / "dale_partition.json").write_text(json.dumps({"band_radius": 3, "cases": partition}))
    for seed in seeds:                                          # the runner writes every run's roles
        (folder / "runs" / f"fold0_seed{seed}" / "cases.json").write_text(json.dumps(
            {"labeled": CASES, "corrupted": {c: "dilate:1" for c in corrupted}}))
    return folder


CASES = ["P01_n1", "P01_n2", "P02_n1", "P03_n1"]


def _dice(base, step):
    return {case: base + step * i for i, case in enumerate(CASES)}


def test_conditions_pool_their_folders_and_compare_by_patient_with_the_ceiling(tmp_path):
    main_arms = _folder(tmp_path, "n30", {"supervised": _dice(0.5, 0.1), "dale": _dice(0.55, 0.1)},
                        corrupted=CASES[:2])
    ablations = _folder(tmp_path, "n30-ablations", {"dale:confidence=none": _dice(0.45, 0.1)}, corrupted=CASES[:2])
    ceiling = _folder(tmp_path, "clean", {"supervised": _dice(0.7, 0.1)})
    table, rows = level_table([("30 %", [main_arms, ablations])], "supervised", ceiling)
    lines = {line.split(" | ")[1]: line for line in table.splitlines() if line.startswith("| 30 %")}
    assert list(lines) == ["supervised", "dale", "dale:confidence=none", CEILING]       # the order asked for
    # every case +0.05 -> every patient +0.05: the paired difference is exact and its CI has no width
    assert "+0.050 [+0.050, +0.050]" in lines["dale"] and "-0.050 [-0.050, -0.050]" in lines["dale:confidence=none"]
    assert "+0.200 [+0.200, +0.200]" in lines[CEILING]
    assert " 3 | " in lines["dale"]                          # 3 patients (P01's two nodules averaged), not 4 cases
    assert lines["dale"].endswith("| 11 |")                   # median training seconds of its runs (10, 12)
    assert {r["condition"] for r in rows} == {"30 %"} and len(rows) == 4 * 2 * 4
    # each run's partition picked 1 case, a corrupted one; a random pick of 1 of 4 with 2 corrupted hits 0.5
    assert "- 30 %: dale: 2 of 2 fuzzy picks on corrupted cases (random picks: 1.0) in 2 runs" in table
    assert "- 30 %: dale:confidence=none: 2 of 2 fuzzy picks" in table


def test_folders_with_another_plan_or_seeds_are_refused_and_the_command_says_so(tmp_path, capsys):
    good = _folder(tmp_path, "a", {"supervised": _dice(0.5, 0.1), "dale": _dice(0.5, 0.1)})
    other_plan = _folder(tmp_path, "b", {"supervised": _dice(0.5, 0.1)}, plan="p2")
    other_seeds = _folder(tmp_path, "c", {"dale": _dice(0.5, 0.1)}, seeds=(0,))
    with pytest.raises(ValueError, match="plan"):
        level_table([("10 %", [good]), ("30 %", [other_plan])], "supervised")
    with pytest.raises(ValueError, match="seeds"):
        level_table([("10 %", [good, other_seeds])], "supervised")
    out = tmp_path / "t.md"
    assert main(["--level", f"10 %={good},{other_seeds}", "--baseline", "supervised", "--out", str(out)]) == 1
    assert "seeds" in capsys.readouterr().err and not out.exists()
    assert main(["--level", f"10 %={good}", "--baseline", "supervised", "--out", str(out)]) == 0
    assert out.exists() and out.with_suffix(".csv").read_text().startswith("condition,network")
