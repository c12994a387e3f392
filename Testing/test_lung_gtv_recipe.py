"""scripts/train_lung_gtv.sh (docs/lung_gtv_model.md, issue 31) runs end to end on the shared data at a budget of a
few iterations: the whole-CT pasted dataset with its leave-one-patient-out splits, one fold, its held-out
evaluation (with the box-labelled CTs and the post-processing rules), the release model and its package. A
second run finds every step done and changes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_recipe(work: Path, shared_data: Path, *steps: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DIFFUMAMBA_SHARED_DATA": str(shared_data), "DIFFUMAMBA": str(Path(sys.executable).parent /
           "diffumamba"), "FOLDS": "0", "ITERATIONS": "5", "ITERATIONS_PER_EPOCH": "5", "PASTES": "1", "JOBS": "1", "VERSION": "9.9.9"}
    done = subprocess.run(["bash", str(REPO / "scripts" / "train_lung_gtv.sh"), str(work), *steps], env=env,
                          capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_the_lung_gtv_recipe_runs_from_the_shared_data_to_a_verified_package(tmp_path, shared_data):
    from diffumamba.model_package import package_members

    work = tmp_path / "work"
    done = run_recipe(work, shared_data)
    raw = work / "raw" / "Dataset311_LungWholeCT"
    names = sorted(p.name[:-len("_0000.nii.gz")] for p in (raw / "imagesTr").iterdir())
    assert len(names) == 5 + 5 + 2                    # the GTV CTs, one pasted copy of each, a slab of each Dx CT
    splits = json.loads((raw / "splits_final.json").read_text())
    assert [s["val"] for s in splits] == [["four_d_lung_113_hm10395"], ["lung1"], ["lung2"],
                                          ["nsclc_radiomics_lung1_001"], ["nsclc_radiomics_lung1_003"]]
    assert "four_d_lung_113_hm10395_w0" not in splits[0]["train"] and "Lung-Dx-A0001_w0z0" in splits[0]["train"]
    runs = work / "pasted-negatives-5"
    assert (runs / "fold0" / "done").exists() and not (runs / "fold1").exists()
    report = json.loads((runs / "evaluation" / "lung_gtv.json").read_text())
    assert [p["case"] for p in report["patients"]] == ["four_d_lung_113_hm10395"]
    assert report["patients"][0]["gtv_ml"] > 70 and [r["case"] for r in report["boxed"]] == ["Lung_Dx-A0001",
                                                                                            "Lung_Dx-A0002"]
    assert set(report["filtered"]) == {"none", "touching", "inside", "min-ml", "p>=0.7", "p>=0.9"}
    assert "| four_d_lung_113_hm10395 | 74.0 |" in done.stdout           # the table is printed
    package = work / "gtv-lung-9.9.9.zip"
    assert [name for name, _ in package_members(package)] == ["fold_all/model.safetensors"]   # verified
    with zipfile.ZipFile(package) as archive:
        assert json.loads(archive.read("plan.json"))["inference"]["crop"] == "lungs"
        assert archive.read("MODEL_CARD.md").decode() == (REPO / "docs" / "lung_gtv_model.md").read_text()
    before = {p: p.stat().st_mtime_ns for p in work.rglob("*") if p.is_file()}
    run_recipe(work, shared_data, "data", "folds", "release")           # resumable: nothing done twice
    assert {p: p.stat().st_mtime_ns for p in work.rglob("*") if p.is_file()} == before
    (runs / "fold0" / "done").unlink()                                  # a fold killed before it was marked done
    run_recipe(work, shared_data, "folds")
    assert "nothing to do" in (runs / "fold0.log").read_text()          # continued from its checkpoint, not redone
    assert (runs / "fold0" / "done").exists()
