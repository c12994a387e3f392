"""Prior-visit GTV propagation on the real brain-tumour pairs: copy, registration only, refined, no prior.

Reproduces the propagation table of the README and docs/experiments.md. Every step is a ``diffumamba``
command (printed before it runs), so the experiment is the product's own path end to end:

1. ``convert longitudinal`` the 6 real pairs, both directions (12 propagation cases), and
   ``convert simulate`` one simulated follow-up of each of the 12 single visits (``--append``);
2. ``train --task propagation`` Diff-UMamba on 3 patient-grouped folds (a patient's real, reversed and
   simulated cases always on one side), with the budget of the brain network comparison;
3. for every held-out pair and direction, ``propagate`` with the fold's model and ``--save-registered``
   (one run gives the registered prior GTV and the refined result, kept within the default 15 mm search
   margin of the registered prior), again with ``--search-margin-mm 0``, and ``predict`` with the no-prior
   Diff-UMamba of the same fold (the segmentation experiment of docs/experiments.md, same folds and
   budget); "copy" is the prior mask unchanged (the scans share a grid upstream);
4. Dice and HD95 against the current visit's expert mask, per patient, with the paired difference of
   each method to registration only (experiment.statistics).

Usage: python scripts/brain_propagation.py WORK_DIR [--data ../shared/data/brain_tumor_progression]
       [--no-prior-runs WORK/brain/experiment/runs]  (reuse a finished segmentation experiment)
Finished steps are skipped when the script is run again.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DIFFUMAMBA_SHARED_DATA", REPO.parent / "shared" / "data")) / "brain_tumor_progression"
GROUP = r"^(\d+)"
FOLDS = 3
BUDGET = ["--epochs", "24", "--iterations", "25", "--lr", "1e-2", "--no-augment", "--features", "8", "64",
          "--max-patch", "20", "64", "64", "--no-amp", "--network", "diffumamba"]
VISITS = {"forward": ("Pre", "Post"), "reverse": ("Post", "Pre")}


def cli(*args) -> None:
    command = [sys.executable, "-m", "diffumamba", *map(str, args)]
    print("$ diffumamba " + " ".join(map(str, args)), flush=True)
    subprocess.run(command, check=True)


def build_datasets(work: Path, data: Path) -> tuple[Path, Path]:
    propagation, single = work / "Dataset201_BrainPropagation", work / "Dataset101_BrainTumourProgression"
    if not (single / "dataset.json").exists():
        cli("convert", "pairs", data, single, "--modality", "MR", "--labels", "tumour",
            "--pair", "{case}/Pre_Scan_T1.nii.gz", "{case}/Pre_Mask.nii.gz", "{case}_pre",
            "--pair", "{case}/Post_Scan_T1.nii.gz", "{case}/Post_Mask.nii.gz", "{case}_post")
    if not (propagation / "dataset.json").exists():
        cli("convert", "longitudinal", data, propagation, "--modality", "MR", "--both-directions",
            "--pair", "{case}/Pre_Scan_T1.nii.gz", "{case}/Pre_Mask.nii.gz", "{case}/Post_Scan_T1.nii.gz",
            "{case}/Post_Mask.nii.gz")
        cli("convert", "simulate", single, propagation, "--append", "--per-case", "1", "--seed", "0")
    return propagation, single


def train(work: Path, dataset: Path, fold: int) -> Path:
    run = work / "propagation_runs" / f"fold{fold}"
    if _unfinished(run):
        resume = ["--resume"] if (run / "last.safetensors").exists() else []
        cli("train", dataset, "--preprocessed", work / "preprocessed_propagation", "--run-dir", run, "--fold", fold,
            "--folds", FOLDS, "--group-pattern", GROUP, "--task", "propagation", *BUDGET, *resume)
    return run / "last.safetensors"


def _unfinished(run: Path) -> bool:
    log = run / "log.csv"
    if not log.exists():
        return True
    rows = list(csv.DictReader(log.open()))
    return not rows or int(rows[-1]["epoch"]) < int(BUDGET[1])


def no_prior_model(work: Path, single: Path, fold: int, runs: Path | None) -> Path:
    if runs is not None:
        return runs / f"fold{fold}_seed0" / "diffumamba" / "last.safetensors"
    run = work / "segmentation_runs" / f"fold{fold}"
    if _unfinished(run):
        resume = ["--resume"] if (run / "last.safetensors").exists() else []
        cli("train", single, "--preprocessed", work / "preprocessed_segmentation", "--run-dir", run, "--fold", fold,
            "--folds", FOLDS, "--group-pattern", r"^(\d+)_", *BUDGET, *resume)
    return run / "last.safetensors"


def score(work: Path, data: Path, patient: str, direction: str, fold: int, refined: Path, no_prior: Path) -> list[dict]:
    import SimpleITK as sitk

    from diffumamba.evaluation.metrics import label_metrics

    prior, current = VISITS[direction]
    folder = data / patient
    out = work / "scored" / f"{patient}_{direction}"
    if not (out / f"{current}_Scan_T1_propagation.json").exists():
        cli("propagate", "--prior", folder / f"{prior}_Scan_T1.nii.gz", "--prior-gtv", folder / f"{prior}_Mask.nii.gz",
            "--current", folder / f"{current}_Scan_T1.nii.gz", "--model", refined, "--out", out, "--save-registered",
            "--progress", "none")
        cli("propagate", "--prior", folder / f"{prior}_Scan_T1.nii.gz", "--prior-gtv", folder / f"{prior}_Mask.nii.gz",
            "--current", folder / f"{current}_Scan_T1.nii.gz", "--model", refined, "--out", out / "anywhere",
            "--search-margin-mm", "0", "--progress", "none")
        cli("predict", folder / f"{current}_Scan_T1.nii.gz", "--model", no_prior, "--out", out / "no_prior",
            "--progress", "none")
    reference_image = sitk.ReadImage(str(folder / f"{current}_Mask.nii.gz"))
    reference = sitk.GetArrayFromImage(reference_image) > 0
    spacing = tuple(reversed(reference_image.GetSpacing()))
    results = {"copy prior": folder / f"{prior}_Mask.nii.gz",
               "registration only": out / f"{current}_Scan_T1_registered_prior_gtv.nii.gz",
               "refined (Diff-UMamba)": out / f"{current}_Scan_T1.nii.gz",
               "refined, no search margin": out / "anywhere" / f"{current}_Scan_T1.nii.gz",
               "no prior (Diff-UMamba)": out / "no_prior" / f"{current}_Scan_T1.nii.gz"}
    rows = []
    for method, path in results.items():
        prediction = sitk.GetArrayFromImage(sitk.ReadImage(str(path))) > 0
        metrics = label_metrics(prediction, reference, spacing)
        rows.append({"network": method, "label": "tumour", "case": f"{patient}_{direction}", "fold": fold, "seed": 0,
                     "direction": direction, **metrics})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path, help="folder for datasets, runs and predictions")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--no-prior-runs", type=Path, help="runs/ of a finished brain segmentation experiment")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "experiments" / "brain_propagation_results.csv")
    args = parser.parse_args()
    from diffumamba.experiment.statistics import compare, markdown_table
    from diffumamba.training.splits import case_groups

    args.work.mkdir(parents=True, exist_ok=True)
    propagation, single = build_datasets(args.work, args.data)
    rows = []
    for fold in range(FOLDS):
        refined = train(args.work, propagation, fold)
        no_prior = no_prior_model(args.work, single, fold, args.no_prior_runs)
        splits = json.loads((propagation / "splits_final.json").read_text())
        patients = sorted({case_groups([c], GROUP)[c] for c in splits[fold]["val"]})
        for patient in patients:
            for direction in VISITS:
                rows.extend(score(args.work, args.data, patient, direction, fold, refined, no_prior))
    columns = ["network", "case", "direction", "fold", "dice", "hd95_mm", "ref_volume_ml", "pred_volume_ml"]
    with args.out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()} for row in rows)
    for title, subset in (("both directions", rows), ("prior = first visit (forward) only",
                                                      [r for r in rows if r["direction"] == "forward"])):
        groups = case_groups(sorted({r["case"] for r in subset}), GROUP)
        print(f"\n### {title}\n")
        print(markdown_table(compare(subset, "registration only", groups), "registration only", "patients"), end="")
    print(f"\nper case: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
