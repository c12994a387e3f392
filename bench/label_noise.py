"""How much the readers' label noise (training/label_noise.py) changes real nodule masks: per kind, the Dice of the
corrupted mask against the clean one and the volume change, on a plan's preprocessed cases (the grid the
experiments corrupt on); for merged vessels also how often real attached tissue was found (else a tube is drawn).

    python bench/label_noise.py WORK/pre/plan_HASH [--cases 300]

It says what a noisy label in the nodule test bed (scripts/nodule_testbed.sh) means in Dice, so the DALE table can
be read against it: a 30 % share of corrupted cases at a median Dice of 0.6 is a different task from one at 0.9.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Training"))

from diffumamba.data.cache import load_case  # noqa: E402
from diffumamba.training.label_noise import READER_SIZES, corrupt_label, dense_reach  # noqa: E402
from scipy import ndimage  # noqa: E402


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("plan", type=Path, help="a plan folder of preprocessed cases (PRE/plan_HASH)")
    parser.add_argument("--cases", type=int, default=300, help="cases to corrupt (every n-th, default 300)")
    args = parser.parse_args()
    names = sorted(p.stem for p in (args.plan / "cases").glob("*.npz"))
    if not names:
        print(f"error: no preprocessed case in {args.plan / 'cases'}", file=sys.stderr)
        return 1
    names = names[:: max(1, len(names) // args.cases)][: args.cases]
    kinds = [f"{k}:{n}" for k, (lo, hi) in READER_SIZES.items() if k != "vessel" for n in range(lo, hi + 1)]
    kinds += ["miss"] + [f"vessel:{n}" for n in range(READER_SIZES["vessel"][0], READER_SIZES["vessel"][1] + 1)]
    scores: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
    found_tissue = 0
    structure = ndimage.generate_binary_structure(3, 1)
    for i, name in enumerate(names):
        data, label, _ = load_case(args.plan, name)
        clean = label > 0
        for kind in kinds:
            noisy = corrupt_label(label, kind, 1, np.random.default_rng(i), data[0]) > 0
            scores[kind].append((dice(noisy, clean), noisy.sum() / clean.sum()))
        found_tissue += int(dense_reach(clean, data[0], 3, structure).sum() >= 3)
    print(f"{len(names)} preprocessed nodules of {args.plan}\n")
    print("| corruption | Dice vs clean (median [10th-90th pct]) | volume ratio (median [10th-90th pct]) |")
    print("|---|---|---|")
    for kind, values in scores.items():
        d, v = np.array(values).T
        print(f"| {kind} | {np.median(d):.2f} [{np.percentile(d, 10):.2f}-{np.percentile(d, 90):.2f}] | "
              f"{np.median(v):.2f} [{np.percentile(v, 10):.2f}-{np.percentile(v, 90):.2f}] |")
    print(f"\nmerged vessel (3 steps): attached dense tissue found for {found_tissue} of {len(names)} nodules "
          f"({100 * found_tissue / len(names):.0f} %); the others get a drawn 3-voxel tube")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
