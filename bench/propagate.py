"""Registration benchmark for contour propagation on real lung CTs with a known deformation.

Each real CT (LUNG1-001 from DICOM + RTSTRUCT, and the two pyradiomics lung CTs) gets a simulated
follow-up (``diffumamba.propagation.simulate``: smooth random B-spline deformation, breathing-like
cranio-caudal shift, rigid motion up to 3 degrees / 10 mm, intensity change and noise; tumour volume
unchanged so that a perfect registration scores Dice 1). The prior GTV is then registered onto the
follow-up by each method and compared with the truth (the prior GTV warped by the known deformation):
Dice, HD95, and the time of registration + warping the mask, median over ``--rounds`` in rotated order,
with the ratio to the rigid registration measured in the same run.

Methods: no registration; rigid; rigid + B-spline around the GTV (the default of ``propagate``);
with ``--whole-scan`` also rigid + B-spline over the whole scan; with ``--elastix-python PY`` (a Python
with ``itk-elastix``) also elastix (rigid + B-spline, Mattes MI, its default pyramid) run in that Python.

    python bench/propagate.py                     # 3 CTs x 3 rounds, 2 threads, bench/results/propagate.md
    python bench/propagate.py --elastix-python /tmp/elxvenv/bin/python --whole-scan
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DIFFUMAMBA_SHARED_DATA", REPO.parent / "shared" / "data"))


def load_cases():
    """(name, CT, GTV) SimpleITK images of the real lung CTs."""
    import SimpleITK as sitk

    from diffumamba.convert.dicom import load_dicom_case

    images, label = load_dicom_case(DATA / "nsclc_radiomics_lung1_001", "GTV-1")
    cases = [("LUNG1-001", images[0], label)]
    for name in ("lung1", "lung2"):
        folder = DATA / "pyradiomics_lung_ct"
        cases.append((f"pyradiomics {name}", sitk.ReadImage(str(folder / f"{name}_image.nrrd")),
                      sitk.ReadImage(str(folder / f"{name}_label.nrrd")) > 0))
    return cases


def methods(whole_scan: bool, elastix_python: str | None) -> dict:
    from diffumamba.propagation.registration import RegistrationSettings

    chosen = {"no registration": None, "rigid": RegistrationSettings(deformable=False),
              "rigid + B-spline around the GTV (default)": RegistrationSettings()}
    if whole_scan:
        chosen["rigid + B-spline, whole scan"] = RegistrationSettings(focus_mm=None)
    if elastix_python:
        chosen["elastix rigid + B-spline"] = elastix_python
    return chosen


def run_method(method, current, prior, prior_mask, work: Path):
    """(warped prior GTV as a numpy array, seconds)."""
    import SimpleITK as sitk

    from diffumamba.propagation.registration import register
    from diffumamba.propagation.warp import warp_mask

    started = time.perf_counter()
    if method is None:
        warped = warp_mask(prior_mask, current, sitk.Transform(3, sitk.sitkIdentity))
    elif isinstance(method, str):
        return run_elastix(method, work)
    else:
        registration = register(current, prior, method, prior_mask=prior_mask)
        warped = warp_mask(prior_mask, current, registration.transform)
    return sitk.GetArrayFromImage(warped), time.perf_counter() - started


def run_elastix(python: str, work: Path):
    import SimpleITK as sitk

    script = Path(__file__).with_name("elastix_register.py")
    result = subprocess.run([python, str(script), str(work / "current.nii.gz"), str(work / "prior.nii.gz"),
                             str(work / "prior_gtv.nii.gz"), str(work / "elastix_gtv.nii.gz")],
                            check=True, capture_output=True, text=True,
                            env={**os.environ, "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": os.environ.get("OMP_NUM_THREADS", "2")})
    seconds = json.loads(result.stdout.strip().splitlines()[-1])["seconds"]
    return sitk.GetArrayFromImage(sitk.ReadImage(str(work / "elastix_gtv.nii.gz"))) >= 0.5, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="of the simulated follow-ups")
    parser.add_argument("--whole-scan", action="store_true", help="also time a B-spline over the whole scan")
    parser.add_argument("--elastix-python", help="a Python interpreter with itk-elastix installed")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "propagate.md")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import numpy as np
    import SimpleITK as sitk
    import torch

    from diffumamba.evaluation.metrics import label_metrics
    from diffumamba.propagation.simulate import SimulationSettings, simulate_followup

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    torch.set_num_threads(args.threads)
    chosen = methods(args.whole_scan, args.elastix_python)
    rows, seconds = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for index, (name, image, gtv) in enumerate(load_cases()):
            gtv = sitk.Cast(gtv, sitk.sitkUInt8)
            started = time.perf_counter()
            followup = simulate_followup(image, gtv, SimulationSettings(volume_change=(1, 1)), rng=[args.seed, index])
            simulate_seconds = time.perf_counter() - started
            truth = sitk.GetArrayFromImage(followup.mask) > 0
            work = Path(tmp) / f"case{index}"
            work.mkdir()
            for written, file in ((followup.image, "current"), (image, "prior"), (gtv, "prior_gtv")):
                sitk.WriteImage(written, str(work / f"{file}.nii.gz"))
            spacing = tuple(reversed(image.GetSpacing()))
            print(f"{name}: {image.GetSize()} voxels, spacing {np.round(image.GetSpacing(), 2).tolist()} mm, "
                  f"GTV {sitk.GetArrayViewFromImage(gtv).sum() * np.prod(spacing) / 1000:.1f} ml (follow-up "
                  f"{truth.sum() * np.prod(spacing) / 1000:.1f} ml after the deformation); follow-up simulated in "
                  f"{simulate_seconds:.0f} s",
                  flush=True)
            for round_ in range(args.rounds):
                names = list(chosen)
                names = names[round_ % len(names):] + names[:round_ % len(names)]   # rotated order
                for method in names:
                    warped, took = run_method(chosen[method], followup.image, image, gtv, work)
                    seconds.setdefault((name, method), []).append(took)
                    if round_ == 0:
                        metrics = label_metrics(warped, truth, spacing)
                        rows.append({"case": name, "method": method, "dice": metrics["dice"],
                                     "hd95": metrics["hd95_mm"]})
                    print(f"  round {round_ + 1} {method}: {took:.1f} s", flush=True)
    baseline = {case: statistics.median(seconds[(case, "rigid")]) for case in {r["case"] for r in rows}}
    lines = [f"Registration of simulated follow-ups of real lung CTs (known deformation), {args.threads} threads, "
             f"median of {args.rounds} rounds; command: `python bench/propagate.py"
             + (" --whole-scan" if args.whole_scan else "") + (" --elastix-python PY" if args.elastix_python else "")
             + "`", "", "| case | method | Dice vs truth | HD95 (mm) | seconds (median) | × rigid |", "|---|---|---|---|---|---|"]
    for row in rows:
        median = statistics.median(seconds[(row["case"], row["method"])])
        lines.append(f"| {row['case']} | {row['method']} | {row['dice']:.3f} | {row['hd95']:.1f} | {median:.1f} | "
                     f"{median / baseline[row['case']]:.2f} |")
    lines += ["", "| method | mean Dice | worst Dice | mean HD95 (mm) | worst seconds |", "|---|---|---|---|---|"]
    for method in chosen:
        mine = [r for r in rows if r["method"] == method]
        worst = max(statistics.median(seconds[(r["case"], method)]) for r in mine)
        lines.append(f"| {method} | {statistics.fmean(r['dice'] for r in mine):.3f} | {min(r['dice'] for r in mine):.3f} | "
                     f"{statistics.fmean(r['hd95'] for r in mine):.1f} | {worst:.1f} |")
    table = "\n".join(lines) + "\n"
    print("\n" + table)
    args.out.write_text(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
