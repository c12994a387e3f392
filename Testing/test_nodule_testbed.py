"""scripts/nodule_testbed.sh (issue 32; docs/experiments.md "Nodule test bed") runs end to end on the 993 shared LIDC
nodules at a budget of one seed and one epoch of 4 iterations (too few for a DALE partition: the partition line is
tested in test_level_table.py): the readers' noise on 30 % of the training cases, 10 % of the
training patients labelled, both tables from the finished runs; a second run trains nothing."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_testbed(work: Path, shared_data: Path, *steps: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DIFFUMAMBA_SHARED_DATA": str(shared_data), "SEEDS": "0", "DALE_ITERATIONS": "4",
           "DIFFCL_ITERATIONS": "4", "ITERATIONS_PER_EPOCH": "4", "DALE_SHARES": "30", "DIFFCL_SHARES": "10",
           "DIFFUMAMBA": str(Path(sys.executable).parent / "diffumamba"), "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(REPO / "scripts" / "nodule_testbed.sh"), str(work), *steps], env=env,
                          capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _cases(work: Path, folder: str) -> dict:
    return json.loads((work / folder / "runs" / "fold0_seed0" / "cases.json").read_text())


def _patient(name: str) -> str:
    return re.match(r"^(LIDC-IDRI-\d{4})_", name).group(1)


def test_the_nodule_testbed_runs_both_tables_from_the_shared_nodules(tmp_path, shared_data):
    work = tmp_path / "work"
    done = run_testbed(work, shared_data, "data", "dale", "diffcl")
    noisy, clean = _cases(work, "dale-30"), _cases(work, "dale-clean")
    assert len(noisy["train"]) == 800 and len(noisy["val"]) == 193             # fold 0 of 5, by patient
    assert noisy["val"] == clean["val"] == _cases(work, "diffcl-10")["val"]   # every table scores the same patients
    assert not {_patient(n) for n in noisy["val"]} & {_patient(n) for n in noisy["train"]}
    assert len(noisy["corrupted"]) == 240 and not clean["corrupted"]
    assert {kind.partition(":")[0] for kind in noisy["corrupted"].values()} == {"dilate", "erode", "shift", "miss",
                                                                                 "vessel"}
    scarce = _cases(work, "diffcl-10")
    labelled = {_patient(n) for n in scarce["labeled"]}
    assert len(labelled) == 44 and not labelled & {_patient(n) for n in scarce["unlabeled"]}   # 10 % of 440 patients
    dale = (work / "dale_table.md").read_text()
    for arm in ("supervised", "dale", "supervised, all labels clean"):
        assert f"| 30 % | {arm} | 1 | 110 |" in dale, arm                     # 110 held-out patients
    diffcl = (work / "diffcl_table.md").read_text()
    for arm in ("supervised", "supervised-hf", "diffcl", "diffcl/diffusion", "diffcl/mean",
                "supervised, all labels clean"):
        assert f"| 10 % | {arm} | 1 | 110 |" in diffcl, arm
    assert "wrote" in done.stdout and (work / "diffcl_table.csv").exists()
    finished = {p: p.stat().st_mtime_ns for p in work.rglob("metrics.json")}
    run_testbed(work, shared_data, "dale", "diffcl")                          # resumable: nothing trained twice
    assert {p: p.stat().st_mtime_ns for p in work.rglob("metrics.json")} == finished and len(finished) == 7
