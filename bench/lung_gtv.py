"""Accuracy of a full-CT lung GTV model as a clinician would judge it (docs/lung_gtv_model.md, issue 31).

For held-out predictions on whole chest CTs (leave-one-patient-out: one file per patient, named as its reference):
per patient the GTV and predicted volume, Dice, HD95, the false-positive volume outside the GTV, the separate
pieces of 1 ml or more, and lesion detection (GTV components of 5 ml or more, found when the prediction covers
half of one); then the mean Dice, the median false-positive volume and whether every GTV of 20 ml or more was
found (the issue's targets). With ``--model`` it also runs the model on the two box-labelled Lung-PET-CT-Dx CTs
(their boxed slabs are never trained on) and reports the share of the predicted volume inside the boxes.

    python bench/lung_gtv.py --pred RUN/heldout --ref WORK/raw/Dataset311_LungWholeCT/labelsTr \\
        --model RUN/fold0/last.safetensors --boxes ../shared/data/lung_pet_ct_dx_boxes --out RUN/evaluation

Prints a Markdown table and writes ``OUT/lung_gtv.json``. ``--ablation A/lung_gtv.json B/lung_gtv.json ...`` prints
one row per finished evaluation instead (the ablation table of docs/lung_gtv_model.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

DX_PATIENTS = ("Lung_Dx-A0001", "Lung_Dx-A0002")
TARGETS = {"mean_dice": 0.40, "median_fp_ml": 100.0, "detect_ml": 20.0}


def patient_rows(pred_folder: Path, ref_folder: Path, images: Path | None = None, rule: str | None = None
                 ) -> list[dict]:
    """Per-patient rows; with ``rule`` the prediction is first filtered (``inference/lesion_filter``) using the
    patient's CT from ``images`` (``CASE_0000.nii.gz``)."""
    from diffumamba.evaluation.images import case_id, check_same_grid
    from diffumamba.mask_io import read_label_map
    from diffumamba.evaluation.lesions import false_positive_ml, lesion_detection, pieces
    from diffumamba.evaluation.metrics import label_metrics

    rows = []
    for path in sorted(pred_folder.iterdir()):
        case = case_id(path)
        if case is None or case.endswith(("_probabilities", "_uncertainty")):
            continue
        ref_path = ref_folder / path.name
        if not ref_path.exists():
            raise FileNotFoundError(f"{path}: no reference {ref_path}")
        pred_image, pred = read_label_map(path)
        ref_image, ref = read_label_map(ref_path)
        check_same_grid(pred_image, ref_image, path, ref_path)
        spacing = ref_image.GetSpacing()[::-1]
        pred, ref = pred > 0, ref > 0
        if rule and rule.startswith("p>="):         # a higher probability threshold than argmax's 0.5
            probabilities = pred_folder / f"{case}_probabilities.nii.gz"
            if not probabilities.exists():
                raise FileNotFoundError(f"{probabilities}: predict with --probabilities to score {rule}")
            pred = _probabilities(probabilities) >= float(rule[3:])
        elif rule:
            import SimpleITK as sitk

            from diffumamba.inference.lesion_filter import keep_pieces

            ct = sitk.GetArrayFromImage(sitk.ReadImage(str(images / f"{case}_0000.nii.gz")))
            pred = keep_pieces(pred, ct, spacing, rule)
        metrics = label_metrics(pred, ref, spacing)
        lesions = lesion_detection(pred, ref, spacing)
        rows.append({"case": case, "gtv_ml": metrics["ref_volume_ml"], "pred_ml": metrics["pred_volume_ml"],
                     "dice": metrics["dice"], "hd95_mm": metrics["hd95_mm"],
                     "fp_ml": false_positive_ml(pred, ref, spacing), "pieces": pieces(pred, spacing),
                     "lesions": lesions})
    if not rows:
        raise ValueError(f"{pred_folder}: no predictions")
    return rows


def _probabilities(path: Path) -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def box_rows(model: Path, boxes_folder: Path, out: Path) -> list[dict]:
    """The model on each Dx CT (lung crop, overlap 0.25, as shipped): share of its predicted volume in the boxes,
    and the share of the boxes' voxels it marks."""
    import SimpleITK as sitk

    from diffumamba.convert.lidc_vois import boxes_mask

    rows = []
    for patient in DX_PATIENTS:
        folder = out / "dx" / patient
        folder.mkdir(parents=True, exist_ok=True)
        result = folder / "ct.nii.gz"
        if not result.exists():
            subprocess.run([sys.executable, "-m", "diffumamba", "predict", str(boxes_folder / patient / "ct"),
                            "--model", str(model), "--out", str(folder), "--crop", "lungs", "--overlap", "0.25",
                            "--progress", "none"], check=True, stdout=subprocess.DEVNULL)
        image = sitk.ReadImage(str(result))
        pred = sitk.GetArrayFromImage(image) > 0
        boxes = boxes_mask(boxes_folder / patient / "boxes.json", image)
        voxel_ml = float(np.prod(image.GetSpacing())) / 1000.0
        rows.append({"case": patient, "pred_ml": float(pred.sum() * voxel_ml),
                     "in_boxes_share": float((pred & boxes).sum() / max(pred.sum(), 1)),
                     "boxes_marked": float((pred & boxes).sum() / boxes.sum())})
    return rows


def summary(rows: list[dict]) -> dict:
    big = [lesion for row in rows for lesion in row["lesions"] if lesion["volume_ml"] >= TARGETS["detect_ml"]]
    return {"mean_dice": statistics.mean(r["dice"] for r in rows), "sd_dice": statistics.pstdev(r["dice"] for r in rows),
            "mean_hd95_mm": statistics.mean(r["hd95_mm"] for r in rows),
            "median_fp_ml": statistics.median(r["fp_ml"] for r in rows),
            "median_pieces": statistics.median(r["pieces"] for r in rows),
            "detected_5ml": f"{sum(l['detected'] for r in rows for l in r['lesions'])}/"
                            f"{sum(len(r['lesions']) for r in rows)}",
            "detected_20ml": f"{sum(l['detected'] for l in big)}/{len(big)}"}


def markdown(name: str, rows: list[dict], totals: dict, dx: list[dict]) -> str:
    lines = [f"### {name}", "", "| held-out patient | GTV (ml) | predicted (ml) | Dice | HD95 (mm) | false positive (ml) "
             "| pieces >= 1 ml | GTV parts >= 5 ml found (covered) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        found = ", ".join(f"{l['volume_ml']:.0f} ml {'yes' if l['detected'] else 'no'} ({l['covered']:.0%})"
                          for l in r["lesions"]) or "none >= 5 ml"
        lines.append(f"| {r['case']} | {r['gtv_ml']:.1f} | {r['pred_ml']:.1f} | {r['dice']:.3f} | {r['hd95_mm']:.1f} "
                     f"| {r['fp_ml']:.1f} | {r['pieces']} | {found} |")
    lines.append(f"| **mean / median** | | | **{totals['mean_dice']:.3f}** (sd {totals['sd_dice']:.3f}) | "
                 f"{totals['mean_hd95_mm']:.1f} | **{totals['median_fp_ml']:.1f}** (median) | "
                 f"{totals['median_pieces']:g} (median) | {totals['detected_5ml']} ({totals['detected_20ml']} of 20 ml+) |")
    if dx:
        lines += ["", "| box-labelled CT | predicted (ml) | share inside the boxes | share of the boxes marked |",
                  "|---|---|---|---|"]
        lines += [f"| {r['case']} | {r['pred_ml']:.1f} | {r['in_boxes_share']:.0%} | {r['boxes_marked']:.0%} |"
                  for r in dx]
    return "\n".join(lines)


def ablation_table(reports: list[Path]) -> str:
    lines = ["| configuration | mean Dice | mean HD95 (mm) | median false positive (ml) | median pieces | GTV parts "
             ">= 5 ml found | of 20 ml or more |", "|---|---|---|---|---|---|---|"]
    for path in reports:
        report = json.loads(Path(path).read_text())
        t = report["summary"]
        lines.append(f"| {report['name']} | {t['mean_dice']:.3f} | {t['mean_hd95_mm']:.1f} | {t['median_fp_ml']:.1f} | "
                     f"{t['median_pieces']:g} | {t['detected_5ml']} | {t['detected_20ml']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ablation", type=Path, nargs="+", metavar="JSON",
                        help="print one row per lung_gtv.json written before, and nothing else")
    parser.add_argument("--pred", type=Path, help="held-out predictions, one per patient")
    parser.add_argument("--ref", type=Path, help="the reference label maps (labelsTr)")
    parser.add_argument("--model", type=Path, help="also run this model on the box-labelled Dx CTs")
    parser.add_argument("--boxes", type=Path, help="the lung_pet_ct_dx_boxes folder (with --model)")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "lung_gtv")
    parser.add_argument("--name", default="held-out predictions", help="heading of the table")
    parser.add_argument("--images", type=Path, help="the CTs (imagesTr): with --filters")
    parser.add_argument("--filters", nargs="+", default=[], metavar="RULE",
                        help="also score the predictions filtered by these rules (inference/lesion_filter.RULES), "
                             "or thresholded at a probability, e.g. p>=0.8 (predictions made with --probabilities)")
    args = parser.parse_args(argv)
    if args.ablation:
        print(ablation_table(args.ablation))
        return 0
    if not (args.pred and args.ref):
        parser.error("--pred and --ref are needed (or --ablation)")
    rows = patient_rows(args.pred, args.ref)
    dx = box_rows(args.model, args.boxes, args.out) if args.model and args.boxes else []
    totals = summary(rows)
    table = markdown(args.name, rows, totals, dx)
    filtered = {}
    if args.filters:
        table += "\n\n| post-processing | mean Dice | median false positive (ml) | median pieces | GTV parts found |"
        table += "\n|---|---|---|---|---|"
        for rule in ["none", *args.filters]:
            result = totals if rule == "none" else summary(patient_rows(args.pred, args.ref, args.images, rule))
            filtered[rule] = result
            table += (f"\n| {rule} | {result['mean_dice']:.3f} | {result['median_fp_ml']:.1f} | "
                      f"{result['median_pieces']:g} | {result['detected_5ml']} ({result['detected_20ml']} of 20 ml+) |")
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "lung_gtv.json").write_text(json.dumps({"name": args.name, "patients": rows, "summary": totals,
                                                        "boxed": dx, "filtered": filtered, "targets": TARGETS}, indent=2) + "\n")
    (args.out / "lung_gtv.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
