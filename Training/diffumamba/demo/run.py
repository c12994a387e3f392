"""``diffumamba demo``: phantoms -> preprocess -> train a small Diff-UMamba -> predict a held-out phantom
-> evaluate -> segmentation file and PNG overlay. Runs on a laptop CPU in a few minutes, offline."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..files import atomic_write_bytes

__all__ = ["run_demo"]

SPACING = (2.5, 1.5, 1.5)  # z, y, x in mm


def write_dataset(root: Path, n_train: int, n_test: int, seed: int) -> None:
    import SimpleITK as sitk

    from .phantom import make_phantom

    for folder in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for index in range(n_train + n_test):
        image, label = make_phantom(seed + index, spacing=SPACING)
        part = "Tr" if index < n_train else "Ts"
        for array, path in ((image, root / f"images{part}" / f"phantom{index:02d}_0000.nii.gz"),
                            (label, root / f"labels{part}" / f"phantom{index:02d}.nii.gz")):
            written = sitk.GetImageFromArray(array)
            written.SetSpacing(tuple(reversed(SPACING)))
            written.SetOrigin((-70.0, -70.0, -50.0))
            sitk.WriteImage(written, str(path))
    (root / "dataset.json").write_text(json.dumps({
        "name": "Phantom", "description": "synthetic CT-like chest phantoms with one lung tumour (diffumamba demo)",
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "GTV": 1}, "file_ending": ".nii.gz",
        "numTraining": n_train}, indent=2))


def run_demo(out: Path, n_train: int = 6, epochs: int = 12, iterations: int = 12, seed: int = 0,
             progress: bool = True) -> dict:
    import SimpleITK as sitk

    from ..data.pipeline import prepare
    from ..evaluation.report import evaluate_folders, summarise, write_reports
    from ..inference.predictor import predict_label_map
    from ..checkpoint import load_model
    from ..training.sampling import TrainingCase
    from ..training.trainer import Trainer, TrainSettings

    started = time.perf_counter()
    out = Path(out)
    dataset = out / "Dataset900_Phantom"
    write_dataset(dataset, n_train, 1, seed)
    prepared = prepare(dataset, out / "preprocessed", "diffumamba", max_patch=[24, 64, 64], amp=False,
                       base_features=8, max_features=64, show_progress=progress)
    plan = prepared.plan
    cases = [TrainingCase.from_cache(prepared.folder, c.name) for c in prepared.cases]
    # No augmentation: the held-out phantom comes from the same generator as the training ones, and a run of 144
    # iterations is short of fitting, not of variety; rotations and scalings only slowed it (docs/demo.md).
    settings = TrainSettings(epochs=epochs, iterations_per_epoch=iterations, initial_lr=1e-2, augment=False,
                             validate_every=max(1, epochs // 3), seed=seed, device="cpu")
    trainer = Trainer(plan.network_config(), cases[:-1], cases[-1:], out / "run", settings, batch_size=2,
                      meta=plan.checkpoint_meta())
    trainer.fit(progress=progress)

    model, header = load_model(out / "run" / "best.safetensors")
    test_image_path = sorted((dataset / "imagesTs").iterdir())[0]
    image = sitk.ReadImage(str(test_image_path))
    data = sitk.GetArrayFromImage(image).astype(np.float32)[None]
    labels = predict_label_map(model, header["plan"], data, tuple(reversed(image.GetSpacing())))
    prediction = sitk.GetImageFromArray(labels.astype(np.uint8))
    prediction.CopyInformation(image)
    (out / "prediction").mkdir(exist_ok=True)
    case = test_image_path.name.replace("_0000.nii.gz", "")
    prediction_path = out / "prediction" / f"{case}.nii.gz"
    sitk.WriteImage(prediction, str(prediction_path))

    rows = evaluate_folders(out / "prediction", dataset / "labelsTs", {1: "GTV"})
    reports = write_reports(rows, out / "evaluation", {"demo": True, "nsd_tolerance_mm": 2.0})
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(dataset / "labelsTs" / f"{case}.nii.gz")))
    overlay = out / "overlay.png"
    atomic_write_bytes(overlay, _overlay_png(data[0], reference, labels, rows[0]))
    summary = summarise(rows)["GTV"]
    return {"dice": summary["dice"]["mean"], "hd95_mm": summary["hd95_mm"]["mean"], "seconds": time.perf_counter() - started,
            "dataset": dataset, "checkpoint": out / "run" / "best.safetensors", "prediction": prediction_path,
            "evaluation": reports["csv"].parent, "overlay": overlay}


def _overlay_png(image: np.ndarray, reference: np.ndarray, prediction: np.ndarray, metrics: dict) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    z = int(np.argwhere(reference > 0)[:, 0].mean()) if reference.any() else image.shape[0] // 2
    figure, axis = plt.subplots(figsize=(5, 5))
    axis.imshow(image[z], cmap="gray", vmin=-1000, vmax=400)
    if reference[z].any():
        axis.contour(reference[z], levels=[0.5], colors="lime", linewidths=1.5)
    if prediction[z].any():
        axis.contour(prediction[z], levels=[0.5], colors="red", linewidths=1.5, linestyles="--")
    axis.set_title(f"reference (green) vs Diff-UMamba (red), slice {z}\n"
                   f"Dice {metrics['dice']:.3f}, HD95 {metrics['hd95_mm']:.1f} mm")
    axis.axis("off")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()
