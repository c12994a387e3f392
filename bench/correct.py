"""Click-correction benchmark (docs/correction.md): Dice after 1, 3, 5 and 10 simulated clicks, NoC@85 and NoC@90,
against the non-AI Grow-from-seeds baseline given the same clicks, and the latency a clinician feels.

Every lung CT is corrected by the correction model of the fold that held it out (``scripts/correction_models.sh``),
from three starting points:

- (a) propagation: a follow-up simulated from the real CT (``propagation.simulate``: deformation, breathing,
  rigid motion, tumour volume x0.5-1.5), the prior GTV registered onto it (registration only, the default
  ``propagate`` settings); the reference is the simulated follow-up's GTV;
- (b) prediction: the segmentation model's prediction for that patient from a model that did not see it (the
  lung preview model's leave-one-out folds: ``scripts/train_lung_preview.sh WORK folds``), with ``--predictions``;
- (c) click: an empty mask; the first click goes into the tumour.

The simulated user (``correction.session``) always clicks the deepest point of the largest error; the baseline
(``correction.region_growing``) gets the same kind of clicks from its own errors. Accuracy is computed per case and
kept in ``--cache`` (a case is computed again only when its fold's checkpoint changed), so cases can be scored as
their folds finish training, on a busy machine.

Latency (``--latency``, on a quiet machine): the wall time of each correction (lesion box, resampling, network, back
onto the CT's grid) on the full-size CT with ``--threads`` CPU threads, p50 / p95 over every click of start (a) of
every case, for the model and for the baseline measured in the same run; and the start-up of ``diffumamba serve
--stdio`` to its ready line (median of 3). ``--large`` adds a latency case: LUNG1-001's follow-up with its GTV grown
x2.5 (about 400 ml), corrected by the last fold's model (its time, not its Dice, is reported).

    python bench/correct.py --dataset WORK/raw/Dataset102_LungGTV --models WORK/correction \\
        --predictions LUNG_PREVIEW_WORK/heldout --cache WORK/bench_correct --latency --large
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REPORTED = (1, 2, 3, 5, 10)


def fold_of(dataset: Path) -> dict[str, int]:
    """case -> the fold whose validation set holds it (splits_final.json beside dataset.json)."""
    splits = json.loads((dataset / "splits_final.json").read_text())
    return {case: k for k, split in enumerate(splits) for case in split["val"]}


def read_case(dataset: Path, case: str):
    import SimpleITK as sitk

    image = sitk.ReadImage(str(next((dataset / "imagesTr").glob(f"{case}_0000.*"))))
    label = sitk.ReadImage(str(next((dataset / "labelsTr").glob(f"{case}.*")))) > 0
    return image, sitk.Cast(label, sitk.sitkUInt8)


def propagation_start(image, label, seed: int, volume_change=(0.5, 1.5)):
    """(follow-up image, its true GTV, the registered prior GTV) for a follow-up simulated from ``image``."""
    import SimpleITK as sitk

    from diffumamba.propagation.pipeline import propagate
    from diffumamba.propagation.simulate import SimulationSettings, simulate_followup

    followup = simulate_followup(image, label, SimulationSettings(volume_change=volume_change), seed)
    result = propagate(followup.image, image, sitk.GetArrayFromImage(label) > 0, check_quality=False)
    return followup.image, sitk.GetArrayFromImage(followup.mask) > 0, result.warped_prior > 0


def session(correct, reference, start, spacing, clicks: int):
    """(Dice after 0..clicks clicks, seconds of each correction)."""
    from diffumamba.correction.session import simulate_session

    seconds = []

    def timed(mask, given):
        started = time.perf_counter()
        out = correct(mask, given)
        seconds.append(time.perf_counter() - started)
        return out

    return simulate_session(timed, reference, start, spacing, clicks), seconds


def slice_to_volume(case: str, fold: int, image, reference, corrector) -> dict:
    """The GTV from two slices drawn by hand (the reference's at a third and two thirds of its extent), no click."""
    import SimpleITK as sitk

    from diffumamba.correction.request import drawn_slices
    from diffumamba.evaluation.metrics import dice

    array = sitk.GetArrayFromImage(image).astype(np.float32)
    spacing = tuple(reversed(image.GetSpacing()))
    slices = np.flatnonzero(reference.any(axis=(1, 2)))
    fixed = sorted({int(slices[len(slices) // 3]), int(slices[2 * len(slices) // 3])})
    drawn = drawn_slices(reference, fixed, case)
    started = time.perf_counter()
    out = corrector.correct(array[None], spacing, np.zeros_like(reference), [], drawn)
    seconds = time.perf_counter() - started
    return {"case": case, "fold": fold, "start": "two drawn slices", "method": "model", "dice": [dice(out, reference)],
            "seconds": [seconds], "gtv_ml": float(reference.sum() * np.prod(spacing) / 1000), "fixed": fixed}


def worker_start_seconds(checkpoint: Path, threads: int, rounds: int = 3) -> float:
    """Median seconds from starting ``diffumamba serve --stdio`` to its ready line."""
    import os

    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        worker = subprocess.Popen([sys.executable, "-m", "diffumamba", "serve", "--stdio", "--model", str(checkpoint),
                                   "--device", "cpu"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                  env={**os.environ, "OMP_NUM_THREADS": str(threads)})
        ready = json.loads(worker.stdout.readline())
        times.append(time.perf_counter() - started)
        worker.communicate('{"command": "quit"}\n', timeout=60)
        assert ready.get("ready"), ready
    return statistics.median(times)


def summarise(rows: list[dict], method: str, start: str) -> dict:
    from diffumamba.correction.session import clicks_to_reach

    chosen = [r for r in rows if r["method"] == method and r["start"] == start]
    out = {"cases": len(chosen), "dice0": statistics.mean(r["dice"][0] for r in chosen)}
    for k in REPORTED:
        out[f"dice{k}"] = statistics.mean(r["dice"][min(k, len(r["dice"]) - 1)] for r in chosen)
    for target in (0.85, 0.90):
        counts = [clicks_to_reach(r["dice"], target) for r in chosen]
        out[f"noc{int(target * 100)}"] = statistics.mean(counts)
        out[f"failed{int(target * 100)}"] = sum(max(r["dice"]) < target for r in chosen)
    return out


def table(rows: list[dict], latency: dict | None, args) -> str:
    lines = [f"# Click correction ({time.strftime('%Y-%m-%d')}, `python bench/correct.py` "
             f"{' '.join(sys.argv[1:])})", "",
             f"Mean over {len({r['case'] for r in rows})} lung CTs, each corrected by the model of the fold that held it "
             f"out; {args.clicks} simulated clicks; NoC@X counts {args.clicks} when X is never reached (failed: how "
             "many cases never reach it).", "",
             "| start | method | cases | Dice 0 | 1 click | 2 | 3 | 5 | 10 | NoC@85 | NoC@90 | failed @85 / @90 |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    drawn = [r for r in rows if r["start"] == "two drawn slices"]
    rows = [r for r in rows if r["start"] != "two drawn slices"]
    for start in sorted(dict.fromkeys(r["start"] for r in rows)):
        for method in dict.fromkeys(r["method"] for r in rows):
            s = summarise(rows, method, start)
            lines.append(f"| {start} | {method} | {s['cases']} | {s['dice0']:.3f} | " +
                         " | ".join(f"{s[f'dice{k}']:.3f}" for k in REPORTED) + f" | {s['noc85']:.1f} | "
                         f"{s['noc90']:.1f} | {s['failed85']} / {s['failed90']} |")
    lines += ["", "Per case (Dice after 0 / 1 / 2 / 3 / 5 / 10 clicks, GTV ml):", ""]
    for r in sorted(rows, key=lambda r: (r["start"], r["case"], r["method"])):
        lines.append(f"- {r['case']}, {r['start']}, {r['method']} ({r['gtv_ml']:.1f} ml): " +
                     " / ".join(f"{r['dice'][min(k, len(r['dice']) - 1)]:.3f}" for k in (0, *REPORTED)))
    if drawn:
        lines += ["", "Slice-to-volume (an empty mask and two of the reference's slices drawn, no click): Dice " +
                  ", ".join(f"{r['case']} {r['dice'][0]:.3f}" for r in drawn) +
                  f"; mean {statistics.mean(r['dice'][0] for r in drawn):.3f}."]
    lines += ["", latency_lines(latency, args) if latency else "Latency: not measured in this run (`--latency`)."]
    return "\n".join(lines) + "\n"


def target_lines(rows: list[dict], lidc: list[dict], latency: dict | None) -> list[str]:
    """Issue 29's targets, each with the measured figure and whether it is met."""
    from correct_lesions import size_group
    from diffumamba.correction.session import clicks_to_reach

    lines = ["| target | measured | met |", "|---|---|---|"]

    def add(what, value, ok):
        lines.append(f"| {what} | {value} | {'yes' if ok else '**no**'} |")

    click = [r for r in rows if r["start"] == "(c) click"]
    model = [r for r in click if r["method"] == "model"]
    grow = {r["case"]: r for r in click if r["method"] == "grow from seeds"}
    if model:
        at3 = statistics.mean(r["dice"][min(3, len(r["dice"]) - 1)] for r in model)
        add("NSCLC GTVs from one click: mean Dice after 3 clicks >= 0.75", f"{at3:.3f}", at3 >= 0.75)
        noc = statistics.mean(clicks_to_reach(r["dice"], 0.85) for r in model)
        add("NSCLC GTVs: NoC@85 <= 5", f"{noc:.1f}", noc <= 5)
        worse = [k for k in range(1, len(model[0]["dice"]))
                 if statistics.mean(r["dice"][k] for r in model) <= statistics.mean(grow[r["case"]]["dice"][k]
                                                                                  for r in model)]
        add("NSCLC GTVs: above Grow from seeds at every click count 1-10",
            "at every count" if not worse else "not at " + ", ".join(map(str, worse)), not worse)
    chosen = [r for r in lidc if r["view"] == "pasted" and r["method"] == "model" and r["diameter_mm"] >= 10]
    if chosen:
        median = statistics.median(r["dice"][1] for r in chosen)
        add(f"held-out LIDC nodules >= 10 mm (pasted, {len(chosen)}): median Dice after 1 click >= 0.80",
            f"{median:.3f}", median >= 0.80)
    crops = [r for r in lidc if r["view"] == "crop" and r["method"] == "model" and r["diameter_mm"] >= 10]
    if crops:
        median = statistics.median(r["dice"][1] for r in crops)
        add(f"the same nodules as native crops ({len(crops)}): median Dice after 1 click >= 0.80", f"{median:.3f}",
            median >= 0.80)
    if latency:
        small = latency.get("click", [])
        if small:
            p95 = float(np.percentile(small, 95))
            add("p95 seconds per click, lesions up to 150 ml, full-size CT <= 1 s", f"{p95:.2f}", p95 <= 1.0)
        add("worker start-up <= 10 s", f"{latency['startup']:.2f}", latency["startup"] <= 10)
    return lines


def latency_lines(latency: dict, args) -> str:
    model, grow = latency["model"], latency["grow from seeds"]
    lines = ["| one correction, full-size CT | clicks | p50 s | p95 s | max s | p50 ratio to baseline |",
             "|---|---|---|---|---|---|"]
    if model:
        lines += [f"| model, from propagation ({args.threads} CPU threads) | {len(model)} | "
                  f"{np.percentile(model, 50):.2f} | {np.percentile(model, 95):.2f} | {max(model):.2f} | "
                  f"{np.percentile(model, 50) / np.percentile(grow, 50):.2f} |",
                  f"| grow from seeds (baseline) | {len(grow)} | {np.percentile(grow, 50):.2f} | "
                  f"{np.percentile(grow, 95):.2f} | {max(grow):.2f} | 1.00 |"]
    click = latency.get("click")
    if click:
        lines.append(f"| model from one click, GTVs up to 150 ml | {len(click)} | {np.percentile(click, 50):.2f} | "
                     f"{np.percentile(click, 95):.2f} | {max(click):.2f} | |")
    large = latency.get("large")
    if large:
        lines.append(f"| model, large GTV ({large['gtv_ml']:.0f} ml, LUNG1-001 grown x2.5) | {len(large['seconds'])} | "
                     f"{np.percentile(large['seconds'], 50):.2f} | {np.percentile(large['seconds'], 95):.2f} | "
                     f"{max(large['seconds']):.2f} | |")
    lines += ["", f"Worker start-up to ready: {latency['startup']:.2f} s (median of 3)."]
    return "\n".join(lines)


def load_models(checkpoint: Path, progressive: bool = True):
    from diffumamba.correction.corrector import Corrector
    from diffumamba.inference.models import load_ensemble

    ensemble = load_ensemble([checkpoint], "cpu")
    corrector = Corrector(ensemble.networks, ensemble.plan, "cpu", progressive=progressive)
    corrector.warm_up()                              # as the worker does before it says it is ready
    return corrector


def starts_of(case: str, args) -> dict:
    """start name -> (scan, reference, start mask or None)."""
    import SimpleITK as sitk

    image, label = read_case(args.dataset, case)
    starts = {}
    if "propagation" in args.starts:
        followup, truth, warped = propagation_start(image, label, args.seed)
        starts["(a) propagation"] = (followup, truth, warped)
    if args.predictions and (args.predictions / f"{case}.nii.gz").exists():
        predicted = sitk.GetArrayFromImage(sitk.ReadImage(str(args.predictions / f"{case}.nii.gz"))) > 0
        starts["(b) prediction"] = (image, sitk.GetArrayFromImage(label) > 0, predicted)
    starts["(c) click"] = (image, sitk.GetArrayFromImage(label) > 0, None)
    return starts


def sessions(corrector, scan, reference, start, clicks: int) -> dict:
    """method -> (Dice after 0..clicks clicks, seconds of each correction), model and baseline from one start."""
    import SimpleITK as sitk

    from diffumamba.correction.region_growing import GrowFromSeeds

    array = sitk.GetArrayFromImage(scan).astype(np.float32)
    spacing = tuple(reversed(scan.GetSpacing()))
    start = np.zeros(reference.shape, bool) if start is None else start
    methods = {"model": lambda mask, given: corrector.correct(array[None], spacing, mask, given),
               "grow from seeds": GrowFromSeeds(array, spacing, start=start).correct}
    return {method: session(correct, reference, start, spacing, clicks) for method, correct in methods.items()}


def case_rows(case: str, fold: int, checkpoint: Path, args) -> list[dict]:
    """Every start and method for one case (from the cache when its checkpoint and settings are unchanged)."""
    key = {"checkpoint": str(checkpoint), "mtime": checkpoint.stat().st_mtime, "clicks": args.clicks,
           "seed": args.seed, "predictions": bool(args.predictions and (args.predictions / f"{case}.nii.gz").exists()),
           "progressive": not args.whole_box, "starts": sorted(args.starts)}
    cached = args.cache / f"{case}.json" if args.cache else None
    if cached is not None and cached.exists():
        saved = json.loads(cached.read_text())
        if saved["key"] == key:
            print(f"{case}: from {cached}")
            return saved["rows"]
    corrector = load_models(checkpoint, not args.whole_box)
    starts = starts_of(case, args)
    rows = []
    for start_name, (scan, reference, start) in starts.items():
        spacing = tuple(reversed(scan.GetSpacing()))
        for method, (dice, seconds) in sessions(corrector, scan, reference, start, args.clicks).items():
            rows.append({"case": case, "fold": fold, "start": start_name, "method": method, "dice": dice,
                         "seconds": seconds, "gtv_ml": float(reference.sum() * np.prod(spacing) / 1000)})
            print(f"{case} {start_name} {method}: " + " ".join(f"{d:.3f}" for d in dice), flush=True)
    rows.append(slice_to_volume(case, fold, starts["(c) click"][0], starts["(c) click"][1], corrector))
    print(f"{case} slice-to-volume: {rows[-1]['dice'][0]:.3f}", flush=True)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_text(json.dumps({"key": key, "rows": rows}))
    return rows


def measure_latency(cases: dict, args) -> dict:
    """Seconds per correction, model and baseline, start (a) of every case; the large GTV; worker start-up."""
    import SimpleITK as sitk

    found = {"model": [], "grow from seeds": [], "click": []}
    corrector = None
    for case, checkpoint in cases.items():
        corrector = load_models(checkpoint, not args.whole_box)
        starts = starts_of(case, args)
        if "(a) propagation" in starts:
            scan, reference, start = starts["(a) propagation"]
            for method, (_, seconds) in sessions(corrector, scan, reference, start, args.clicks).items():
                found[method] += seconds
        scan, reference, _ = starts["(c) click"]
        if reference.sum() * np.prod(scan.GetSpacing()) / 1000 <= 150:      # the target's lesions: up to 150 ml
            array = sitk.GetArrayFromImage(scan).astype(np.float32)
            spacing = tuple(reversed(scan.GetSpacing()))
            found["click"] += session(lambda mask, clicks: corrector.correct(array[None], spacing, mask, clicks),
                                      reference, np.zeros(reference.shape, bool), spacing, args.clicks)[1]
        print(f"{case}: latency measured", flush=True)
    if args.large:                   # time only: the last fold's model (it may have seen this patient)
        image, label = read_case(args.dataset, "nsclc_radiomics_lung1_001")
        followup, truth, warped = propagation_start(image, label, args.seed, volume_change=(2.5, 2.5))
        array = sitk.GetArrayFromImage(followup).astype(np.float32)
        spacing = tuple(reversed(followup.GetSpacing()))
        _, seconds = session(lambda mask, clicks: corrector.correct(array[None], spacing, mask, clicks),
                             truth, warped, spacing, 5)
        found["large"] = {"gtv_ml": float(truth.sum() * np.prod(spacing) / 1000), "seconds": seconds}
    found["startup"] = worker_start_seconds(next(iter(cases.values())), args.threads)
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, help="the lung dataset (with splits_final.json unless --model)")
    parser.add_argument("--models", type=Path, help="folder with foldK/last.safetensors")
    parser.add_argument("--model", type=Path,
                        help="one checkpoint or package for every case instead of fold models: one that saw none of "
                             "them (the click model's held-out run, scripts/click_model.sh)")
    parser.add_argument("--lidc-vois", type=Path, help="lidc_idri_nodule_vois: score held-out nodules by size")
    parser.add_argument("--lidc-dataset", type=Path, help="the pasted lesion dataset the --model run trained on")
    parser.add_argument("--lidc-run", type=Path, help="the run whose validation fold holds the held-out nodules")
    parser.add_argument("--lidc-limit", type=int, help="every held-out nodule >= 10 mm and smaller ones up to N in all")
    parser.add_argument("--predictions", type=Path, help="held-out segmentation predictions CASE.nii.gz (start b)")
    parser.add_argument("--clicks", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cases", nargs="+", help="only these cases")
    parser.add_argument("--cache", type=Path, help="folder keeping each case's accuracy rows")
    parser.add_argument("--starts", nargs="+", choices=["propagation", "click"], default=["propagation", "click"],
                        help="starting points of the lung cases (prediction: whenever --predictions has the case)")
    parser.add_argument("--latency", action="store_true", help="also time every click (on a quiet machine)")
    parser.add_argument("--large", action="store_true", help="with --latency: also time a ~400 ml GTV")
    parser.add_argument("--latency-only", action="store_true",
                        help="with --latency: time only (e.g. the shipped model, whose accuracy on these cases is not "
                             "a held-out figure)")
    parser.add_argument("--whole-box", action="store_true",
                        help="the model's answer replaces the whole lesion box (no progressive merge)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "correct.md")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    cases, folds = {}, {}
    if args.dataset and args.model:
        folds = {p.name.split(".")[0]: "held out" for p in sorted((args.dataset / "labelsTr").iterdir())}
    elif args.dataset:
        folds = fold_of(args.dataset)
    for case, fold in sorted(folds.items()):
        checkpoint = args.model or args.models / f"fold{fold}" / "last.safetensors"
        if (args.cases and case not in args.cases) or not checkpoint.exists():
            print(f"{case}: skipped ({'not chosen' if args.cases and case not in args.cases else f'no {checkpoint}'})")
            continue
        cases[case] = checkpoint
    if args.dataset and not cases:
        raise SystemExit("no case had a model: train them with scripts/correction_models.sh")
    rows = [] if args.latency_only else [row for case, checkpoint in cases.items()
                                         for row in case_rows(case, folds[case], checkpoint, args)]
    lidc = []
    if args.lidc_vois:
        from correct_lesions import lidc_rows

        lidc = lidc_rows(args, load_models(args.model) if args.model else None, session)
    latency = measure_latency(cases, args) if args.latency or args.latency_only else None
    report = table(rows, latency, args) if rows else (latency_lines(latency, args) + "\n" if latency else "")
    if lidc:
        from correct_lesions import lidc_table

        report += ("\n## LIDC nodules of held-out patients, from one click\n\nMedian (mean) Dice from an empty mask; "
                   "pasted: in a chest CT's context; crop: the native crop alone.\n\n"
                   + "\n".join(lidc_table(lidc, REPORTED)) + "\n")
    report += "\n## Targets (issue 29)\n\n" + "\n".join(target_lines(rows, lidc, latency)) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    args.out.with_suffix(".json").write_text(json.dumps({"rows": rows, "lidc": lidc, "latency": latency}, indent=1))
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
