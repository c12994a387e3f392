"""README pictures of real results on the shared lung CT (NSCLC-Radiomics LUNG1-001), drawn with matplotlib.

These are NOT 3D Slicer screenshots (Slicer cannot run on the machines this project is built on): they are
renderings of the files our command line writes, with Slicer's view conventions (radiological: patient right
on the left of axial/coronal views, anterior up in axial, anterior left in sagittal, superior up).

    .venv/bin/python scripts/readme_pictures.py [OUT_DIR] [--data ../shared/data] [--work DIR] [--seed 0]

Steps (each a real ``diffumamba`` command, run as ``python -m diffumamba`` as the Slicer module runs it):

1. ``convert dicom`` LUNG1-001's DICOM CT + RTSTRUCT (ROI ``GTV-1``) to a NIfTI CT and GTV label map;
2. ``convert simulate --per-case 1 --seed SEED --true-transform``: a simulated follow-up of that CT with a known
   deformation and a random tumour volume change (the tool's range, ratio 0.5-1.5), and its true GTV;
3. ``propagate`` registration only, with the arguments the module's ``prepare_propagation`` builds
   (``--prior prior.nii.gz --prior-gtv prior_gtv.nii.gz --current current.nii.gz --out output --device cpu
   --progress json``), then the Dice of its result against the simulated truth.

Writes ``gtv_on_ct.png`` and ``propagation.png`` (with the propagation report's figures) in OUT_DIR
(default ``Resources/Screenshots``), and prints the numbers shown and the run time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CASE = "nsclc_radiomics_lung1_001"
WINDOW, LEVEL = 1500.0, -600.0
EXPERT, PROPAGATED, TRUTH, POLYGON = "#ff3030", "#ffa000", "#00e5ff", "#ffff66"


def diffumamba(*args: str, cwd: Path | None = None) -> None:
    command = [sys.executable, "-m", "diffumamba", *args]
    print("$", " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True, cwd=cwd)


def read(path: Path):
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    return image, sitk.GetArrayFromImage(image)


def lung_box(ct, spacing_zyx, margin_mm=12.0):
    """(z, y, x) index slices around the lungs: air below -400 HU not connected to the in-plane border."""
    import numpy as np
    from scipy import ndimage

    step = 4
    air = ct[:, ::step, ::step] < -400
    labels, count = ndimage.label(air)
    border = np.unique(np.concatenate([labels[:, 0].ravel(), labels[:, -1].ravel(),
                                       labels[:, :, 0].ravel(), labels[:, :, -1].ravel()]))
    sizes = ndimage.sum(air, labels, range(1, count + 1))
    voxel_ml = spacing_zyx[0] * spacing_zyx[1] * spacing_zyx[2] * step * step / 1000
    keep = [i + 1 for i, s in enumerate(sizes) if s * voxel_ml > 50 and (i + 1) not in border]
    where = np.argwhere(np.isin(labels, keep))
    low, high = where.min(0) * [1, step, step], (where.max(0) + 1) * [1, step, step]
    margin = [int(round(margin_mm / s)) for s in spacing_zyx]
    return tuple(slice(max(0, a - m), min(n, b + m)) for a, b, m, n in zip(low, high, margin, ct.shape))


def geometry(image):
    """Voxel-centre coordinates (x, y, z in mm, LPS) of an axis-aligned SimpleITK image."""
    import numpy as np

    direction = np.array(image.GetDirection()).reshape(3, 3)
    if not np.allclose(direction, np.eye(3)):
        raise ValueError("this script draws axis-aligned (identity direction) scans only")
    return [o + s * np.arange(n) for o, s, n in zip(image.GetOrigin(), image.GetSpacing(), image.GetSize())]


def views(ct, masks, coords, centre, box):
    """(name, 2D CT, [2D masks], (x coords, y coords), crop, orientation letters, flip) per view, in Slicer's
    conventions: axial radiological with anterior up; coronal and sagittal with superior up."""
    x, y, z = coords
    k, j, i = centre
    return [
        ("axial", ct[k], [m[k] for m in masks], (x, y), (box[2], box[1]), ("R", "L", "A", "P"), True,
         f"z = {z[k]:.1f} mm (slice {k + 1}/{len(z)})"),
        ("coronal", ct[:, j], [m[:, j] for m in masks], (x, z), (box[2], box[0]), ("R", "L", "S", "I"), False,
         f"y = {y[j]:.1f} mm"),
        ("sagittal", ct[:, :, i], [m[:, :, i] for m in masks], (y, z), (box[1], box[0]), ("A", "P", "S", "I"), False,
         f"x = {x[i]:.1f} mm"),
    ]


def draw(ax, view, styles, title, crop=None):
    """CT in the lung window with the masks outlined; extent in mm so anisotropic voxels keep their aspect.
    ``crop``: (u slice, v slice) instead of the view's own (the lungs' box)."""
    from matplotlib import patheffects
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    name, plane, masks, (u, v), (cu, cv), (left, right, top, bottom), v_down, where = view
    cu, cv = crop or (cu, cv)
    du, dv = u[1] - u[0], v[1] - v[0]
    extent = (u[0] - du / 2, u[-1] + du / 2, v[-1] + dv / 2, v[0] - dv / 2) if v_down else \
        (u[0] - du / 2, u[-1] + du / 2, v[0] - dv / 2, v[-1] + dv / 2)
    ax.imshow(plane, cmap="gray", vmin=LEVEL - WINDOW / 2, vmax=LEVEL + WINDOW / 2, extent=extent,
              origin="upper" if v_down else "lower", interpolation="bilinear")
    for mask, style in zip(masks, styles):
        if mask.any():
            ax.contour(u, v, mask.astype(float), levels=[0.5], **style)
    ax.set_xlim(u[cu.start], u[cu.stop - 1])
    ax.set_ylim((v[cv.stop - 1], v[cv.start]) if v_down else (v[cv.start], v[cv.stop - 1]))
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_color("#606060")
    ax.set_title(f"{title}\n{name}, {where}", fontsize=9, color="white")
    outline = [patheffects.withStroke(linewidth=2.5, foreground="black")]
    kw = dict(transform=ax.transAxes, color="white", fontsize=10, fontweight="bold", path_effects=outline)
    ax.text(0.015, 0.5, left, ha="left", va="center", **kw)
    ax.text(0.985, 0.5, right, ha="right", va="center", **kw)
    ax.text(0.5, 0.985, top, ha="center", va="top", **kw)
    ax.text(0.5, 0.015, bottom, ha="center", va="bottom", **kw)
    length = 50 if abs(u[cu.stop - 1] - u[cu.start]) > 120 else 10
    bar = AnchoredSizeBar(ax.transData, length, f"{length} mm", "lower right", pad=0.4, color="white", frameon=False,
                          size_vertical=0, fontproperties={"size": 8})
    bar.txt_label._text.set_path_effects(outline)
    ax.add_artist(bar)


def save_small(fig, out: Path, limit: int = 280_000):
    """PNG at 100 dpi on a fixed palette: the outline colours (and their blends with black, grey and white, for
    anti-aliased edges) plus as many grey levels as keep the file under ``limit`` bytes (README pictures stay
    under 300 KB; CT noise is what costs)."""
    import io

    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=100, facecolor=fig.get_facecolor())
    image = Image.open(buffer).convert("RGB")
    colours = [np.array([int(c[i:i + 2], 16) for i in (1, 3, 5)]) for c in (EXPERT, PROPAGATED, TRUTH, POLYGON)]
    blends = [np.round(c * a + g * (1 - a)) for c in colours for g in (0, 128, 255) for a in (1.0, 0.5)]
    for greys in (192, 128, 96, 64, 48, 32):
        levels = [np.full(3, round(v)) for v in np.linspace(0, 255, greys)]
        palette = np.array(levels + blends, dtype=np.uint8)
        flat = np.zeros((256, 3), np.uint8)
        flat[:len(palette)] = palette
        flat[len(palette):] = palette[-1]
        reference = Image.new("P", (1, 1))
        reference.putpalette(flat.ravel().tolist())
        encoded = io.BytesIO()
        image.quantize(palette=reference, dither=Image.Dither.NONE).save(encoded, format="PNG", optimize=True)
        if encoded.tell() <= limit:
            break
    out.write_bytes(encoded.getvalue())
    return greys


def centre_of(mask):
    """(axial slice with the largest area, centroid row, centroid column) of a (z, y, x) mask."""
    import numpy as np

    areas = mask.sum((1, 2))
    where = np.argwhere(mask)
    centroid = where.mean(0)
    return int(areas.argmax()), int(round(centroid[1])), int(round(centroid[2]))


def gtv_picture(out: Path, ct_image, ct, gtv, polygons):
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.lines import Line2D

    spacing = tuple(reversed(ct_image.GetSpacing()))
    coords = geometry(ct_image)
    centre = centre_of(gtv)
    box = lung_box(ct, spacing)
    style = dict(colors=EXPERT, linewidths=1.6)
    with plt.style.context("dark_background"):
        fig, axes = plt.subplots(1, 3, figsize=(11.5, 4.7), gridspec_kw=dict(width_ratios=[1.25, 1.0, 0.75]))
        for ax, view in zip(axes, views(ct, [gtv], coords, centre, box)):
            draw(ax, view, [style], "LUNG1-001 planning CT")
        # the RTSTRUCT's own polygons on the axial slice: the rasterised mask must follow them
        z = coords[2][centre[0]]
        on_slice = [p for p in polygons if abs(float(np.median(p[:, 2])) - z) < 0.25 * ct_image.GetSpacing()[2]]
        for p in on_slice:
            closed = np.vstack([p, p[:1]])
            axes[0].plot(closed[:, 0], closed[:, 1], color=POLYGON, lw=0.9, ls=(0, (2, 2)))
        volume = gtv.sum() * np.prod(spacing) / 1000
        fig.legend(handles=[Line2D([], [], color=EXPERT, lw=1.6,
                                   label="expert GTV-1: RTSTRUCT rasterised on the CT grid (diffumamba convert dicom)"),
                            Line2D([], [], color=POLYGON, lw=0.9, ls=(0, (2, 2)),
                                   label="GTV-1 polygon as stored in the RTSTRUCT (axial view)")],
                   loc="lower center", ncol=2, fontsize=8.5, frameon=False)
        fig.suptitle(f"NSCLC-Radiomics LUNG1-001: expert GTV-1 ({volume:.1f} ml), lung window W {WINDOW:.0f} / "
                     f"L {LEVEL:.0f}\nmatplotlib rendering of the files our command line writes — not a 3D Slicer "
                     "screenshot", fontsize=10)
        fig.subplots_adjust(left=0.01, right=0.99, top=0.8, bottom=0.08, wspace=0.05)
        greys = save_small(fig, out)
        plt.close(fig)
    return {"gtv_ml": round(float(volume), 1), "axial_slice": centre[0] + 1, "z_mm": round(float(z), 1),
            "coronal_y_mm": round(float(coords[1][centre[1]]), 1), "sagittal_x_mm": round(float(coords[0][centre[2]]), 1),
            "polygons_on_axial_slice": len(on_slice), "grey_levels": greys}


def tumour_crop(masks, margin_mm, coords):
    """(x slice, y slice) of the masks' in-plane box plus a margin."""
    import numpy as np

    union = np.any([m.any(0) for m in masks], axis=0)
    where = np.argwhere(union)
    spacing = [coords[1][1] - coords[1][0], coords[0][1] - coords[0][0]]
    low = [max(0, int(a - margin_mm / s)) for a, s in zip(where.min(0), spacing)]
    high = [min(n, int(b + 1 + margin_mm / s)) for b, s, n in zip(where.max(0), spacing, union.shape)]
    return slice(low[1], high[1]), slice(low[0], high[0])


def propagation_picture(out: Path, prior_image, prior, prior_gtv, current_image, current, result, truth,
                        report: dict, scores: dict, seed: int):
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    spacing = tuple(reversed(prior_image.GetSpacing()))
    coords = geometry(prior_image)
    box = lung_box(prior, spacing)
    expert = [dict(colors=EXPERT, linewidths=1.5)]
    both = [dict(colors=TRUTH, linewidths=1.4, linestyles="dashed"), dict(colors=PROPAGATED, linewidths=1.4)]
    prior_views = views(prior, [prior_gtv], coords, centre_of(prior_gtv), box)
    current_views = views(current, [truth, result], coords, centre_of(truth), box)
    seconds = report["registration_seconds"]
    lines = [
        "current_propagation.json (propagate,",
        "registration only, no model, --device cpu):",
        f"  prior GTV              {report['prior_volume_ml']:7.1f} ml",
        f"  current GTV (result)   {report['current_volume_ml']:7.1f} ml",
        f"  volume change          {report['volume_change_percent']:+7.1f} %",
        "  Dice registered prior",
        f"    vs result            {report['dice_registered_prior_vs_result']:7.3f}",
        f"  registration  {sum(seconds.values()):.1f} s (rigid {seconds['rigid']:.1f} s,",
        f"    B-spline {seconds['deformable']:.1f} s, resample {seconds['resample']:.1f} s)",
        f"  Jacobian range   {report['jacobian_min']:.2f} to {report['jacobian_max']:.2f}",
        "",
        "Against the known truth (this script):",
        f"  true follow-up GTV     {scores['truth_ml']:7.1f} ml",
        f"  simulated volume ratio {scores['volume_ratio']:7.3f}",
        f"  Dice result vs truth   {scores['dice']:7.3f}",
        f"  HD95 result vs truth   {scores['hd95_mm']:7.2f} mm",
        "",
        "Registration only moves the prior GTV",
        "with the anatomy; it does not model the",
        f"tumour's growth (here {100 * (scores['volume_ratio'] - 1):+.0f} %).",
    ]
    with plt.style.context("dark_background"):
        fig = plt.figure(figsize=(12.0, 8.4))
        grid = fig.add_gridspec(2, 3, width_ratios=[1.2, 1.0, 1.05])
        for column in (0, 1):
            draw(fig.add_subplot(grid[0, column]), prior_views[column], expert, "prior: LUNG1-001 CT, expert GTV-1")
            draw(fig.add_subplot(grid[1, column]), current_views[column], both, "current: simulated follow-up")
        zoom = fig.add_subplot(grid[0, 2])
        draw(zoom, current_views[0], both, "current, zoomed", crop=tumour_crop([truth, result], 12.0, coords))
        text = fig.add_subplot(grid[1, 2])
        text.axis("off")
        text.text(0.0, 1.0, "\n".join(lines), family="monospace", fontsize=9, va="top", ha="left",
                  transform=text.transAxes)
        fig.legend(handles=[Line2D([], [], color=EXPERT, lw=1.5, label="prior: expert GTV-1 (RTSTRUCT)"),
                            Line2D([], [], color=PROPAGATED, lw=1.4, label="current: propagated GTV (propagate output)"),
                            Line2D([], [], color=TRUTH, lw=1.4, ls="--",
                                   label="current: true GTV (simulated, known deformation)")],
                   loc="lower center", ncol=3, fontsize=9, frameon=False)
        fig.suptitle("Contour propagation on a real CT: LUNG1-001 → a simulated follow-up "
                     f"(diffumamba convert simulate --seed {seed}), lung window W 1500 / L -600\n"
                     "matplotlib rendering of the files diffumamba writes — not a 3D Slicer screenshot", fontsize=10)
        fig.subplots_adjust(left=0.01, right=0.995, top=0.875, bottom=0.05, wspace=0.06, hspace=0.22)
        greys = save_small(fig, out)
        plt.close(fig)
    return {"grey_levels": greys}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=REPO / "Resources" / "Screenshots")
    parser.add_argument("--data", type=Path,
                        default=Path(os.environ.get("DIFFUMAMBA_SHARED_DATA", REPO.parent / "shared" / "data")),
                        help="the shared real data folder (default ../shared/data or $DIFFUMAMBA_SHARED_DATA)")
    parser.add_argument("--work", type=Path, help="keep the intermediate files here (default: a temporary folder)")
    parser.add_argument("--seed", type=int, default=0, help="of the simulated follow-up (default 0)")
    args = parser.parse_args()
    started = time.perf_counter()
    import matplotlib

    matplotlib.use("Agg")

    from diffumamba.dicom.rtstruct import read_rtstruct, select_rois
    from diffumamba.evaluation.metrics import label_metrics

    case_folder = args.data / CASE
    if not case_folder.is_dir():
        raise SystemExit(f"{case_folder} not found (give the shared data folder with --data)")
    args.out.mkdir(parents=True, exist_ok=True)
    temporary = None if args.work else tempfile.TemporaryDirectory()
    work = (args.work or Path(temporary.name)).resolve()
    work.mkdir(parents=True, exist_ok=True)
    try:
        segmentation, simulated = work / "Dataset001_LUNG1", work / "Dataset002_LUNG1Simulated"
        if segmentation.exists():
            shutil.rmtree(segmentation)
        diffumamba("convert", "dicom", str(case_folder), str(segmentation), "--roi", "GTV-1")
        diffumamba("convert", "simulate", str(segmentation), str(simulated), "--per-case", "1", "--seed",
                   str(args.seed), "--true-transform", "--overwrite")
        # the module's propagation flow: prior.nii.gz, current.nii.gz, prior_gtv.nii.gz in a work folder
        flow = work / "propagation"
        if flow.exists():
            shutil.rmtree(flow)
        flow.mkdir()
        shutil.copy(segmentation / "imagesTr" / f"{CASE}_0000.nii.gz", flow / "prior.nii.gz")
        shutil.copy(segmentation / "labelsTr" / f"{CASE}.nii.gz", flow / "prior_gtv.nii.gz")
        shutil.copy(simulated / "imagesTr" / f"{CASE}_sim0_0000.nii.gz", flow / "current.nii.gz")
        propagate_started = time.perf_counter()
        with open(flow / "progress.jsonl", "w") as progress:
            command = [sys.executable, "-m", "diffumamba", "propagate", "--prior", "prior.nii.gz", "--prior-gtv",
                       "prior_gtv.nii.gz", "--current", "current.nii.gz", "--out", "output", "--device", "cpu",
                       "--progress", "json"]
            print("$", " ".join(command[1:]), flush=True)
            subprocess.run(command, check=True, cwd=flow, stderr=progress)
        propagate_seconds = time.perf_counter() - propagate_started
        report = json.loads((flow / "output" / "current_propagation.json").read_text())

        prior_image, prior = read(flow / "prior.nii.gz")
        _, prior_gtv = read(flow / "prior_gtv.nii.gz")
        current_image, current = read(flow / "current.nii.gz")
        _, result = read(flow / "output" / "current.nii.gz")
        _, truth = read(simulated / "labelsTr" / f"{CASE}_sim0.nii.gz")
        prior_gtv, result, truth = prior_gtv > 0, result > 0, truth > 0
        spacing = tuple(reversed(prior_image.GetSpacing()))
        metrics = label_metrics(result, truth, spacing)
        scores = {"truth_ml": round(float(metrics["ref_volume_ml"]), 1),
                  "volume_ratio": round(float(truth.sum() / prior_gtv.sum()), 3),
                  "dice": round(float(metrics["dice"]), 3), "hd95_mm": round(float(metrics["hd95_mm"]), 2)}

        structure_set = read_rtstruct(next((case_folder / "rtstruct").glob("*.dcm")))
        polygons = [p for roi in select_rois(structure_set, "GTV-1") for p in roi.contours]
        shown = gtv_picture(args.out / "gtv_on_ct.png", prior_image, prior, prior_gtv, polygons)
        propagation_picture(args.out / "propagation.png", prior_image, prior, prior_gtv, current_image, current,
                            result, truth, report, scores, args.seed)
    finally:
        if temporary is not None:
            temporary.cleanup()
    summary = {"gtv_on_ct": shown,
               "propagation_report": {k: report[k] for k in ("prior_volume_ml", "registered_prior_volume_ml",
                                                              "current_volume_ml", "volume_change_percent",
                                                              "dice_registered_prior_vs_result",
                                                              "registration_seconds", "jacobian_min",
                                                              "jacobian_max")},
               "propagate_command_seconds": round(propagate_seconds, 1),
               "versus_truth": scores,
               "files": {p.name: p.stat().st_size for p in sorted(args.out.glob("*.png"))},
               "seconds": round(time.perf_counter() - started, 1)}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
