"""nnU-Net v2 against `diffumamba train` at an equal budget, on the real data in ../shared/data.

    pip install -r bench/requirements-nnunet.txt        # nnunetv2 (benchmark only, never a runtime dependency)
    python bench/versus_nnunet.py lung  WORK            # 5 lung-tumour CTs, leave-one-patient-out
    python bench/versus_nnunet.py brain WORK            # 12 brain MRIs of 6 patients, 3 patient-grouped folds
    python bench/versus_nnunet.py lung  WORK --arms resunet resunet-no-augment ...   # ablation rows

The raw dataset is made once by our `convert` from the files as they are, and both tools read it. Every arm
trains on the same folds with the same target spacing, patch, batch size, network size and number of
iterations on this CPU, and predicts each held-out case on its original grid; every prediction is scored by
`diffumamba evaluate`. Seconds per training iteration count the training loop only (data, augmentation,
forward, backward, step); inference seconds are the whole predict command per case (start-up included);
peak memory is the peak resident set of the training and of the predict process. Finished folds are kept
(the command resumes); `--table-only` re-prints WORK/<dataset>/table.md. What is matched and what could
not be is in docs/versus_nnunet.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "nnunet"))

import arm as nnunet_arm  # noqa: E402
from measure import CommandFailed, run_measured  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DIFFUMAMBA = str(Path(sys.executable).with_name("diffumamba"))


@dataclass
class DatasetSpec:
    name: str
    convert: list[list[str]]           # diffumamba convert command lines (after "diffumamba convert")
    plan: list[str]                    # planning options shared by our arms (and copied into nnU-Net's plans)
    folds: int
    group_pattern: str | None
    epochs: int
    iterations: int
    lr: float = 1e-2


def datasets() -> dict[str, DatasetSpec]:
    lung = "Dataset102_LungGTV"
    brain = "Dataset101_BrainTumourProgression"
    return {
        "lung": DatasetSpec(lung, [
            ["pairs", str(DATA / "pyradiomics_lung_ct"), lung, "--pair", "{case}_image.nrrd", "{case}_label.nrrd"],
            ["dicom", str(DATA / "nsclc_radiomics_lung1_001"), str(DATA / "nsclc_radiomics_lung1_003"), lung,
             "--roi", "GTV.*", "--append"],
            ["dicom", str(DATA / "four_d_lung_113_hm10395"), lung, "--roi", "Tumor_c40|LN_c40", "--append"],
        ], ["--spacing", "4", "2", "2", "--features", "8", "64", "--max-patch", "24", "64", "64", "--no-amp"],
            folds=5, group_pattern=None, epochs=10, iterations=25),
        "brain": DatasetSpec(brain, [
            ["pairs", str(DATA / "brain_tumor_progression"), brain, "--modality", "MR", "--labels", "tumour",
             "--pair", "{case}/Pre_Scan_T1.nii.gz", "{case}/Pre_Mask.nii.gz", "{case}_pre",
             "--pair", "{case}/Post_Scan_T1.nii.gz", "{case}/Post_Mask.nii.gz", "{case}_post"],
        ], ["--features", "8", "64", "--max-patch", "20", "64", "64", "--no-amp"],
            folds=3, group_pattern=r"^(\d+)_", epochs=16, iterations=25),
    }


@dataclass(frozen=True)
class OurArm:
    """One of our arms: the network, extra `diffumamba train` and `predict` options, and for inference-only
    ablations the arm whose trained fold models it reuses (then it does not train)."""

    network: str
    train: tuple[str, ...] = ()
    predict: tuple[str, ...] = ()
    models_of: str | None = None


# The first three are the comparison; the rest are the ablations of docs/versus_nnunet.md, one change each.
OUR_ARMS: dict[str, OurArm] = {
    "resunet": OurArm("resunet"),
    "diffumamba": OurArm("diffumamba"),
    "umambabot": OurArm("umambabot"),
    "resunet-no-augment": OurArm("resunet", ("--no-augment",)),
    "resunet-in-patch": OurArm("resunet", ("--spatial-aug", "in-patch")),
    "diffumamba-in-patch": OurArm("diffumamba", ("--spatial-aug", "in-patch")),
    "resunet-zero-init": OurArm("resunet", ("--residual-init", "zero")),
    "resunet-batch-dice": OurArm("resunet", ("--dice", "batch")),
    "resunet-oversample-0.5": OurArm("resunet", ("--oversample", "0.5")),
    "resunet-lung-crop": OurArm("resunet", predict=("--crop", "lungs"), models_of="resunet"),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=sorted(datasets()))
    parser.add_argument("work", type=Path)
    parser.add_argument("--arms", nargs="+", default=["nnunet", "resunet", "diffumamba"],
                        help=f"nnunet and any of {', '.join(OUR_ARMS)}")
    parser.add_argument("--fold-list", nargs="+", type=int, help="folds to run (default: all)")
    parser.add_argument("--epochs", type=int, help="override the dataset's budget")
    parser.add_argument("--iterations", type=int, help="iterations per epoch")
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument("--no-timing", action="store_true",
                        help="skip the timing pass (for runs that share the CPU with others: their speed is not "
                             "comparable)")
    args = parser.parse_args(argv)
    spec = datasets()[args.dataset]
    if args.epochs:
        spec.epochs = args.epochs
    if args.iterations:
        spec.iterations = args.iterations
    for name in args.arms:
        if name != "nnunet" and name not in OUR_ARMS:
            parser.error(f"unknown arm {name!r}: nnunet or one of {', '.join(OUR_ARMS)}")
    work = args.work.resolve() / args.dataset
    work.mkdir(parents=True, exist_ok=True)
    if not args.table_only:
        try:
            run(spec, work, args.arms, args.fold_list)
            if not args.no_timing:
                with (work / "commands.log").open("a") as log:
                    timing(spec, work, args.arms, log)
        except CommandFailed as err:
            print(f"versus_nnunet: {err}", file=sys.stderr)
            return 1
    table = make_table(spec, work, args.arms)
    (work / "table.md").write_text(table)
    print(table)
    return 0


def run(spec: DatasetSpec, work: Path, arms: list[str], fold_list: list[int] | None) -> None:
    with (work / "commands.log").open("a") as log:
        raw = prepare_raw(spec, work, log)
        splits = json.loads((raw / "splits_final.json").read_text())
        folds = fold_list if fold_list is not None else list(range(len(splits)))
        our_plan = prepare_our_plan(spec, work, raw, log)
        dataset_id = nnunet_arm.prepare(work, raw, our_plan, splits, log) if "nnunet" in arms else None
        for name in arms:
            for fold in folds:
                result = work / "arms" / name / f"fold{fold}.json"
                if result.exists():
                    continue
                print(f"{name}, fold {fold}: training {spec.epochs} x {spec.iterations} iterations", flush=True)
                heldout = [raw / "imagesTr" / f"{case}_0000{file_ending(raw)}" for case in splits[fold]["val"]]
                predictions = work / "arms" / name / "predictions"
                if name == "nnunet":
                    measured = nnunet_arm.train(work, dataset_id, fold, spec.epochs, spec.iterations, spec.lr, log)
                    measured |= nnunet_arm.predict(work, dataset_id, fold, heldout, predictions, log)
                else:
                    measured = train_ours(spec, work, raw, name, fold, log)
                    measured |= predict_ours(work, name, fold, heldout, predictions, log)
                result.parent.mkdir(parents=True, exist_ok=True)
                result.write_text(json.dumps({"fold": fold, "val": splits[fold]["val"], **measured}, indent=1))
                print(f"{name}, fold {fold}: {measured['train_seconds'] / measured['iterations']:.2f} s/iteration, "
                      f"{measured['predict_seconds']:.0f} s per prediction", flush=True)
            evaluate(work, raw, name, log)


def file_ending(raw: Path) -> str:
    return json.loads((raw / "dataset.json").read_text())["file_ending"]


def prepare_raw(spec: DatasetSpec, work: Path, log) -> Path:
    """Convert the shared data with our `convert` (once) and write the folds both tools use."""
    raw = work / "raw" / spec.name
    if not (raw / "dataset.json").exists():
        shutil.rmtree(raw, ignore_errors=True)
        raw.parent.mkdir(parents=True, exist_ok=True)
        for command in spec.convert:
            run_measured([DIFFUMAMBA, "convert", *[raw.name if c == spec.name else c for c in command]],
                         None, log, cwd=raw.parent)
    if not (raw / "splits_final.json").exists():
        from diffumamba.training.splits import load_or_create_splits

        names = sorted(p.name[: -len(file_ending(raw))] for p in (raw / "labelsTr").iterdir())
        # One case per fold when there are as many folds as cases: leave-one-patient-out.
        load_or_create_splits(raw / "splits_final.json", names, spec.folds, group_pattern=spec.group_pattern)
    return raw


def prepare_our_plan(spec: DatasetSpec, work: Path, raw: Path, log) -> dict:
    """Plan and preprocess with our pipeline; nnU-Net's matched plans copy this plan's choices."""
    pre = work / "ours" / "preprocessed"
    run_measured([DIFFUMAMBA, "preprocess", str(raw), "--preprocessed", str(pre), *spec.plan], None, log)
    plans = sorted(pre.glob("plan_*/plan.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(plans[-1].read_text())


def train_ours(spec: DatasetSpec, work: Path, raw: Path, name: str, fold: int, log, run_dir: Path | None = None,
               epochs: int | None = None, iterations: int | None = None) -> dict:
    arm = OUR_ARMS[name]
    if arm.models_of and run_dir is None:
        trained = json.loads((work / "arms" / arm.models_of / f"fold{fold}.json").read_text())
        return {k: v for k, v in trained.items() if k.startswith("train") or k in ("iterations", "epoch_seconds")}
    network, extra = arm.network, list(arm.train)
    run_dir = run_dir or work / "arms" / name / f"fold{fold}"
    epochs, iterations = epochs or spec.epochs, iterations or spec.iterations
    command = [DIFFUMAMBA, "train", str(raw), "--preprocessed", str(work / "ours" / "preprocessed"),
               "--run-dir", str(run_dir), "--fold", str(fold), "--folds", str(spec.folds), "--network", network,
               *spec.plan, "--epochs", str(epochs), "--iterations", str(iterations), "--lr", str(spec.lr),
               "--validate-every", "0", "--seed", "0", "--overwrite", *extra]
    measured = run_measured(command, None, log)
    with (run_dir / "log.csv").open() as handle:
        epoch_seconds = [float(row["seconds"]) for row in csv.DictReader(handle)]
    return {"train_seconds": sum(epoch_seconds), "iterations": epochs * iterations, "epoch_seconds": epoch_seconds,
            "train_peak_mb": measured["peak_mb"], "train_wall_seconds": measured["seconds"]}


TIMING_EPOCHS, TIMING_ITERATIONS = 3, 10


def timing(spec: DatasetSpec, work: Path, arms: list[str], log) -> None:
    """Speed measured with nothing else running: each arm trains fold 0 for 3 epochs of 10 iterations (median epoch)
    and predicts fold 0's held-out cases once. Separate from the runs, so their numbers stay comparable even when
    ablation runs shared the CPU."""
    raw = work / "raw" / spec.name
    splits = json.loads((raw / "splits_final.json").read_text())
    heldout = [raw / "imagesTr" / f"{case}_0000{file_ending(raw)}" for case in splits[0]["val"]]
    for name in arms:
        result = work / "timing" / f"{name}.json"
        if result.exists():
            continue
        print(f"{name}: timing pass", flush=True)
        folder = work / "timing" / name
        shutil.rmtree(folder, ignore_errors=True)
        if name == "nnunet":
            dataset_id = spec.name.split("_")[0][len("Dataset"):]
            measured = nnunet_arm.train(work, dataset_id, 0, TIMING_EPOCHS, TIMING_ITERATIONS, spec.lr, log,
                                        results=folder / "results")
            measured |= nnunet_arm.predict(work, dataset_id, 0, heldout, folder / "predictions", log,
                                           results=folder / "results")
        else:
            measured = train_ours(spec, work, raw, name, 0, log, run_dir=folder / "run", epochs=TIMING_EPOCHS,
                                  iterations=TIMING_ITERATIONS)
            model = folder / "run" / "last.safetensors"
            measured |= predict_ours(work, name, 0, heldout, folder / "predictions", log, model=model)
        seconds = statistics.median(measured["epoch_seconds"]) / TIMING_ITERATIONS
        result.write_text(json.dumps({"seconds_per_iteration": seconds, "predict_seconds": measured["predict_seconds"],
                                      "predicted": splits[0]["val"], **measured}, indent=1))


def predict_ours(work: Path, name: str, fold: int, images: list[Path], out: Path, log,
                 model: Path | None = None) -> dict:
    arm = OUR_ARMS[name]
    model = model or work / "arms" / (arm.models_of or name) / f"fold{fold}" / "last.safetensors"
    measured = run_measured([DIFFUMAMBA, "predict", *map(str, images), "--model", str(model), "--out", str(out),
                             "--progress", "none", "--overwrite", *arm.predict], None, log)
    return {"predict_seconds": measured["seconds"] / len(images), "predict_peak_mb": measured["peak_mb"]}


def evaluate(work: Path, raw: Path, name: str, log) -> None:
    """Score the arm's predictions with `diffumamba evaluate` against the references of the cases it predicted."""
    predictions = work / "arms" / name / "predictions"
    ending = file_ending(raw)
    refs = work / "arms" / name / "references"
    shutil.rmtree(refs, ignore_errors=True)
    refs.mkdir(parents=True)
    for prediction in predictions.glob(f"*{ending}"):
        (refs / prediction.name).symlink_to((raw / "labelsTr" / prediction.name).resolve())
    run_measured([DIFFUMAMBA, "evaluate", "--pred", str(predictions), "--ref", str(refs), "--out",
                  str(work / "arms" / name / "evaluation")], None, log)


def make_table(spec: DatasetSpec, work: Path, arms: list[str]) -> str:
    arms = [a for a in arms if (work / "arms" / a / "evaluation" / "metrics.csv").exists()]
    metrics = {a: read_metrics(work / "arms" / a / "evaluation" / "metrics.csv") for a in arms}
    runs = {a: [json.loads(p.read_text()) for p in sorted((work / "arms" / a).glob("fold*.json"))] for a in arms}
    cases = sorted({c for m in metrics.values() for c in m})
    lines = [f"Budget: {spec.epochs} x {spec.iterations} = {spec.epochs * spec.iterations} training iterations per "
             f"fold, batch 2, learning rate {spec.lr:g}; plan options {' '.join(spec.plan)}.", "",
             "| case | " + " | ".join(f"{a} Dice / HD95 (mm)" for a in arms) + " |",
             "|---" * (len(arms) + 1) + "|"]
    for case in cases:
        cells = [f"{metrics[a][case]['dice']:.3f} / {metrics[a][case]['hd95']:.1f}" if case in metrics[a] else "–"
                 for a in arms]
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    means = [f"**{mean(metrics[a], 'dice'):.3f} / {mean(metrics[a], 'hd95'):.1f}**" for a in arms]
    lines += ["| **mean** | " + " | ".join(means) + " |", ""]
    timed = {a: json.loads((work / "timing" / f"{a}.json").read_text()) for a in arms
             if (work / "timing" / f"{a}.json").exists()}
    reference = timed.get("nnunet")
    lines += ["| arm | folds | mean Dice | mean HD95 (mm) | parameters | s / training iteration | × nnU-Net | "
              "predict s (fold 0 case) | × nnU-Net | s / iteration in the runs | training peak MB | predict peak MB |",
              "|---" * 12 + "|"]
    for a in arms:
        r, t = runs[a], timed.get(a)
        speed = [f"{t['seconds_per_iteration']:.2f}",
                 f"{t['seconds_per_iteration'] / reference['seconds_per_iteration']:.2f}" if reference else "–",
                 f"{t['predict_seconds']:.0f}",
                 f"{t['predict_seconds'] / reference['predict_seconds']:.2f}" if reference else "–"] if t else ["–"] * 4
        lines.append(f"| {a} | {len(r)} | {mean(metrics[a], 'dice'):.3f} | {mean(metrics[a], 'hd95'):.1f} | "
                     f"{parameters(work, a):,} | " + " | ".join(speed) + " | "
                     f"{statistics.median(x['train_seconds'] / x['iterations'] for x in r):.2f} | "
                     f"{max(x['train_peak_mb'] for x in r):.0f} | {max(x['predict_peak_mb'] for x in r):.0f} |")
    lines += ["", "Speed: the timing pass (each arm alone on the CPU: median of 3 epochs of 10 iterations, one prediction "
              "of fold 0's held-out case, start-up included); the runs' own seconds per iteration can include other "
              "work sharing the CPU. Peak memory: resident set of the training and of the predict process."]
    return "\n".join(lines) + "\n"


def parameters(work: Path, arm: str) -> int:
    if arm == "nnunet":
        return nnunet_arm.parameter_count(work, next((work / "nnunet" / "preprocessed").iterdir()).name.split("_")[0][7:])
    from diffumamba.checkpoint import load_model

    model, _ = load_model(work / "arms" / (OUR_ARMS[arm].models_of or arm) / "fold0" / "last.safetensors")
    return sum(p.numel() for p in model.parameters())


def read_metrics(path: Path) -> dict[str, dict[str, float]]:
    with path.open() as handle:
        return {row["case"]: {"dice": float(row["dice"]), "hd95": float(row["hd95_mm"])} for row in csv.DictReader(handle)}


def mean(rows: dict[str, dict[str, float]], key: str) -> float:
    return statistics.mean(r[key] for r in rows.values())


if __name__ == "__main__":
    sys.exit(main())
