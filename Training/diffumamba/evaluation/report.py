"""Evaluate a folder of predictions against a folder of references and write CSV, JSON and a box plot."""

from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path
from typing import Iterable, Mapping, Optional

import numpy as np

from ..files import atomic_write_bytes, atomic_write_text
from ..mask_io import read_label_map
from .images import IMAGE_SUFFIXES, case_id, check_same_grid
from .metrics import METRIC_NAMES, label_metrics

__all__ = ["pair_cases", "evaluate_folders", "summarise", "write_reports"]

PLOTTED = ("dice", "hd95_mm", "assd_mm", "nsd")


def pair_cases(pred_dir: Path, ref_dir: Path) -> list[tuple[str, Path, Path]]:
    """Match predictions to references by case id; every reference needs a prediction."""
    for folder, what in ((pred_dir, "prediction"), (ref_dir, "reference")):
        if not folder.is_dir():
            raise FileNotFoundError(f"{what} folder does not exist: {folder}")
    refs = {case_id(p): p for p in sorted(ref_dir.iterdir()) if case_id(p)}
    preds = {case_id(p): p for p in sorted(pred_dir.iterdir()) if case_id(p)}
    if not refs:
        raise ValueError(f"no label maps ({', '.join(IMAGE_SUFFIXES)}) in {ref_dir}")
    missing = sorted(set(refs) - set(preds))
    if missing:
        raise ValueError(f"no prediction for {len(missing)} reference case(s): {', '.join(missing[:10])}"
                         + (" ..." if len(missing) > 10 else ""))
    return [(case, preds[case], refs[case]) for case in sorted(refs)]


def evaluate_folders(pred_dir: Path, ref_dir: Path, labels: Optional[Mapping[int, str]] = None,
                     nsd_tolerance_mm: float = 2.0, progress: Optional[Iterable] = None) -> list[dict]:
    """One row per case and label. Labels default to every non-zero value found in the references.

    ``progress`` wraps the case list (e.g. ``tqdm``) so the caller chooses how progress is shown.
    """
    cases = pair_cases(pred_dir, ref_dir)
    loaded = []
    for case, pred_path, ref_path in (progress(cases) if progress else cases):
        pred_image, pred = read_label_map(pred_path)
        ref_image, ref = read_label_map(ref_path)
        check_same_grid(pred_image, ref_image, pred_path, ref_path)
        loaded.append((case, pred, ref, tuple(reversed(ref_image.GetSpacing()))))  # numpy axes are z, y, x
    if labels is None:
        values = sorted({int(v) for _, _, ref, _ in loaded for v in np.unique(ref) if v != 0})
        if not values:
            raise ValueError("every reference is empty: name the labels to evaluate with --labels")
        labels = {v: f"label_{v}" for v in values}
    rows = []
    for case, pred, ref, spacing in loaded:
        for value, name in labels.items():
            metrics = label_metrics(pred == value, ref == value, spacing, nsd_tolerance_mm)
            rows.append({"case": case, "label": name, **metrics})
    return rows


def summarise(rows: list[dict]) -> dict:
    """Mean, sd, median, min and max of every metric per label, plus counts of empty masks."""
    summary: dict = {}
    for label in dict.fromkeys(r["label"] for r in rows):
        mine = [r for r in rows if r["label"] == label]
        entry = {"cases": len(mine), "ref_empty": sum(bool(r["ref_empty"]) for r in mine),
                 "pred_empty": sum(bool(r["pred_empty"]) for r in mine)}
        for metric in METRIC_NAMES:
            values = [float(r[metric]) for r in mine]
            entry[metric] = {"mean": statistics.fmean(values),
                             "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
                             "median": statistics.median(values), "min": min(values), "max": max(values)}
        summary[label] = entry
    return summary


def write_reports(rows: list[dict], out_dir: Path, settings: Mapping) -> dict[str, Path]:
    """Write metrics.csv, summary.json and boxplot.png into ``out_dir`` (each written atomically)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = ["case", "label", *METRIC_NAMES, "ref_empty", "pred_empty"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]) for k in columns})
    paths = {"csv": out_dir / "metrics.csv", "json": out_dir / "summary.json", "png": out_dir / "boxplot.png"}
    png = _boxplot(rows)
    atomic_write_text(paths["csv"], buffer.getvalue())
    atomic_write_text(paths["json"], json.dumps({"settings": dict(settings), "labels": summarise(rows)},
                                                indent=2) + "\n")
    atomic_write_bytes(paths["png"], png)
    return paths


def _boxplot(rows: list[dict]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    labels = list(dict.fromkeys(r["label"] for r in rows))
    figure, axes = plt.subplots(1, len(PLOTTED), figsize=(3.2 * len(PLOTTED), 3.6))
    for axis, metric in zip(axes, PLOTTED):
        axis.boxplot([[float(r[metric]) for r in rows if r["label"] == label] for label in labels])
        axis.set_xticks(range(1, len(labels) + 1), labels, rotation=30)
        axis.set_title(metric.replace("_mm", " (mm)").replace("hd95", "HD95").replace("assd", "ASSD")
                       .replace("dice", "Dice").replace("nsd", "NSD"))
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()
