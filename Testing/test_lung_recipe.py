"""docs/train-lung-gtv.md: every ``bash recipe`` block runs, in order, on the shared lung cases laid out as the public
downloads are (TCIA's NBIA folder tree for NSCLC-Radiomics, the MSD Task06_Lung tarball), at a budget of a few
iterations. A failing command fails the test with its output."""

import json
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
TCIA_SERIES = {"nsclc_radiomics_lung1_001": ("LUNG1-001", "09-18-2008-StudyID-NA-69331"),
               "nsclc_radiomics_lung1_003": ("LUNG1-003", "01-01-2014-StudyID-NA-34270")}


def recipe_blocks() -> list[str]:
    text = (REPO / "docs" / "train-lung-gtv.md").read_text()
    return re.findall(r"```bash recipe\n(.*?)```", text, flags=re.S)


def tcia_tree(shared_data, root: Path) -> Path:
    """NSCLC-Radiomics as the NBIA Data Retriever saves it: patient / study / '<n>.000000-<desc>-<id>' / files."""
    for folder, (patient, study) in TCIA_SERIES.items():
        base = root / "NSCLC-Radiomics" / patient / study
        for series, source in (("0.000000-NA-82046", "ct"), ("3.000000-NA-78236", "rtstruct")):
            (base / series).mkdir(parents=True)
            for dicom in sorted((shared_data / folder / source).glob("*.dcm")):
                (base / series / dicom.name).symlink_to(dicom)
    (root / "NSCLC-Radiomics" / "metadata.csv").write_text("Series UID,Collection\n")   # the retriever writes one
    return root / "NSCLC-Radiomics"


def msd_tree(shared_data, root: Path) -> Path:
    """Task06_Lung as the MSD tarball extracts: imagesTr/labelsTr NIfTI, dataset.json, and macOS '._' files."""
    task = root / "Task06_Lung"
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (task / sub).mkdir(parents=True)
    for index, case in enumerate(("lung1", "lung2"), start=1):
        for kind, sub in (("image", "imagesTr"), ("label", "labelsTr")):
            image = sitk.ReadImage(str(shared_data / "pyradiomics_lung_ct" / f"{case}_{kind}.nrrd"))
            sitk.WriteImage(image, str(task / sub / f"lung_{index:03d}.nii.gz"))
            (task / sub / f"._lung_{index:03d}.nii.gz").write_bytes(b"\x00\x05\x16\x07Mac OS X")
    (task / "dataset.json").write_text(json.dumps({"name": "Lung", "modality": {"0": "CT"},
                                                   "labels": {"0": "background", "1": "cancer"}, "numTraining": 2}))
    return task


def test_every_recipe_command_runs_on_the_shared_cases_laid_out_like_the_downloads(shared_data, tmp_path):
    blocks = recipe_blocks()
    assert len(blocks) >= 7
    work = tmp_path / "lung-gtv"
    env = {**os.environ, "TCIA": str(tcia_tree(shared_data, tmp_path)), "MSD": str(msd_tree(shared_data, tmp_path)),
           "WORK": str(work), "EPOCHS": "1", "ITERATIONS": "2", "FOLDS": "0", "NFOLDS": "2", "GPUS": "1",
           "VALIDATE_EVERY": "0", "DM": str(Path(sys.executable).parent / "diffumamba"), "OMP_NUM_THREADS": "1",
           "PLAN_OPTIONS": "--spacing 4 2 2 --features 4 8 --max-patch 16 32 32 --no-amp",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    script = "set -euo pipefail\n" + "\n".join(blocks)
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])

    dataset = json.loads((work / "raw" / "Dataset200_LungGTV" / "dataset.json").read_text())
    assert dataset["numTraining"] == 4 and dataset["labels"] == {"background": 0, "GTV": 1}
    assert not list((tmp_path / "Task06_Lung").rglob("._*"))
    splits = json.loads((work / "raw" / "Dataset200_LungGTV" / "splits_final.json").read_text())
    held_out = splits[0]["val"]
    assert sorted(p.name.split(".")[0] for p in (work / "crossval").glob("*.nii.gz")) == sorted(held_out)
    summary = json.loads((work / "crossval_evaluation" / "summary.json").read_text())
    assert summary["labels"]["GTV"]["cases"] == len(held_out)
    entry = json.loads((work / "catalog_entry.json").read_text())
    package = work / "gtv-lung-1.0.0.zip"
    assert entry["sha256"] == hashlib.sha256(package.read_bytes()).hexdigest()
    assert entry["size_bytes"] == package.stat().st_size and 0 <= entry["accuracy"]["dice"] <= 1
