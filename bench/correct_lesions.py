"""The lesion part of ``bench/correct.py`` (issue 29): LIDC nodules of held-out patients, by size, from one click.

Two views of the same held-out nodules (the patients of the model's validation fold, recorded in its run's
``cases.json``; the model never saw them):

- ``pasted``: each nodule pasted into a chest CT (its case in the lesion dataset, ``convert lidc --host``), the
  whole case through ``Corrector`` as ``correct`` runs it: the nodule in a chest's context, as in use;
- ``crop``: the native crop itself (about 30 x 30 x 8 mm): no context beyond it, the network's window padded
  (with the mean intensity, MONAI's zero padding after normalisation) where the crop ends.

Each starts from an empty mask; the simulated user clicks the deepest point of the largest error; Grow from seeds
gets the same kind of clicks from its own errors. Size groups follow metadata.csv's diameter.
"""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import numpy as np

SIZE_GROUPS = (("< 10 mm", 0.0, 10.0), ("10-20 mm", 10.0, 20.0), ("> 20 mm", 20.0, 1e9))


def diameters(vois: Path) -> dict[str, float]:
    """``LIDC-IDRI-0001_n1`` -> the nodule's diameter (mm) from metadata.csv."""
    out = {}
    with (vois / "metadata.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            out[f"{row['patient_id']}_n{int(row['nodule_id'])}"] = float(row["diameter_mm"])
    return out


def heldout_nodules(run: Path) -> list[str]:
    """The nodules (``LIDC-IDRI-0001_n1``) of the run's validation cases (``_pN`` pastes folded into one)."""
    val = json.loads((run / "cases.json").read_text())["val"]
    return sorted({name.rsplit("_p", 1)[0] for name in val if name.startswith("LIDC-IDRI-")})


def size_group(diameter: float) -> str:
    return next(name for name, low, high in SIZE_GROUPS if low <= diameter < high)


def read_pair(image_path: Path, label_path: Path):
    import SimpleITK as sitk

    image = sitk.ReadImage(str(image_path))
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(label_path))) > 0
    return array, tuple(reversed(image.GetSpacing())), label


def nodule_rows(name: str, view: str, image_path: Path, label_path: Path, corrector, clicks: int,
                diameter: float, session, methods: tuple = ("model", "grow from seeds")) -> list[dict]:
    """The model and/or Grow from seeds from an empty mask on one nodule."""
    from diffumamba.correction.region_growing import GrowFromSeeds

    array, spacing, label = read_pair(image_path, label_path)
    empty = np.zeros(label.shape, bool)
    run = {"model": lambda: (lambda mask, given: corrector.correct(array[None], spacing, mask, given)),
           "grow from seeds": lambda: GrowFromSeeds(array, spacing).correct}
    rows = []
    for method in methods:
        correct = run[method]()
        dice, seconds = session(correct, label, empty, spacing, clicks)
        rows.append({"case": name, "view": view, "method": method, "dice": dice, "seconds": seconds,
                     "diameter_mm": diameter, "ml": float(label.sum() * np.prod(spacing) / 1000)})
    return rows


def lidc_rows(args, corrector, session) -> list[dict]:
    """Rows of every held-out nodule in both views (cached per nodule in ``--cache``)."""
    sizes = diameters(args.lidc_vois)
    nodules = heldout_nodules(args.lidc_run)
    if args.lidc_limit:
        nodules = choose(nodules, sizes, args.lidc_limit, args.seed)
    dataset = args.lidc_dataset
    # the baseline's rows do not depend on the model: cached apart, so they can be computed while it trains
    keys = {"grow from seeds": {"clicks": args.clicks, "dataset": str(dataset)}}
    if corrector is not None:
        keys["model"] = {"model": str(args.model), "mtime": Path(args.model).stat().st_mtime, "clicks": args.clicks,
                         "dataset": str(dataset)}
    rows = []
    for count, name in enumerate(nodules, 1):
        patient, nodule = name.split("_n")
        for method, key in keys.items():
            cached = args.cache / "lidc" / method.replace(" ", "_") / f"{name}.json" if args.cache else None
            if cached is not None and cached.exists():
                saved = json.loads(cached.read_text())
                if saved["key"] == key:
                    rows += saved["rows"]
                    continue
            found = []
            pasted = dataset / "imagesTr" / f"{name}_p0_0000.nii.gz"
            if pasted.exists():
                found += nodule_rows(name, "pasted", pasted, dataset / "labelsTr" / f"{name}_p0.nii.gz", corrector,
                                     args.clicks, sizes[name], session, (method,))
            crop = args.lidc_vois / "image" / f"{patient}_R_{nodule}.nii.gz"
            found += nodule_rows(name, "crop", crop, args.lidc_vois / "mask" / crop.name, corrector, args.clicks,
                                 sizes[name], session, (method,))
            for row in found:
                print(f"[{count}/{len(nodules)}] {name} {row['view']} {row['method']} ({row['diameter_mm']:.1f} mm): "
                      + " ".join(f"{d:.2f}" for d in row["dice"]), flush=True)
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                cached.write_text(json.dumps({"key": key, "rows": found}))
            rows += found
    return rows


def choose(nodules: list[str], sizes: dict[str, float], limit: int, seed: int) -> list[str]:
    """Every held-out nodule of 10 mm or more, and a seeded sample of the smaller ones up to ``limit`` in all."""
    large = [n for n in nodules if sizes[n] >= 10]
    small = [n for n in nodules if sizes[n] < 10]
    room = max(0, limit - len(large))
    picked = list(np.random.default_rng(seed).choice(small, min(room, len(small)), replace=False)) if room else []
    return sorted(large + [str(n) for n in picked])


def lidc_table(rows: list[dict], reported, noc_targets=(0.85, 0.90)) -> list[str]:
    """Markdown lines: per view, size group and method, median (mean) Dice after each reported click count."""
    from diffumamba.correction.session import clicks_to_reach

    lines = ["| view | size | method | nodules | " + " | ".join(f"{k} click{'s' if k > 1 else ''}" for k in reported)
             + " | NoC@85 | NoC@90 | failed @85 / @90 |",
             "|---|---|---|---|" + "---|" * len(reported) + "---|---|---|"]
    for view in ("pasted", "crop"):
        for group, _, _ in SIZE_GROUPS:
            for method in ("model", "grow from seeds"):
                chosen = [r for r in rows if r["view"] == view and size_group(r["diameter_mm"]) == group
                          and r["method"] == method]
                if not chosen:
                    continue
                cells = []
                for k in reported:
                    values = [r["dice"][min(k, len(r["dice"]) - 1)] for r in chosen]
                    cells.append(f"{statistics.median(values):.3f} ({statistics.mean(values):.3f})")
                nocs = [statistics.mean(clicks_to_reach(r["dice"], t) for r in chosen) for t in noc_targets]
                failed = [sum(max(r["dice"]) < t for r in chosen) for t in noc_targets]
                lines.append(f"| {view} | {group} | {method} | {len(chosen)} | " + " | ".join(cells) +
                             f" | {nocs[0]:.1f} | {nocs[1]:.1f} | {failed[0]} / {failed[1]} |")
    return lines
