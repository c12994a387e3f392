"""Did DALE's case partition find the corrupted labels? In an experiment with ``--corrupt-fraction`` the runner knows
which training cases it corrupted (each run's ``cases.json``) and DALE records which ones it judged fuzzy
(``dale_partition.json``); comparing the two against the share a random pick would hit tells whether a DALE result
comes from the method's mechanism or from training on fewer cases per phase."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

__all__ = ["partition_summary", "partition_lines"]


def partition_summary(out: Path) -> dict[str, dict]:
    """Per DALE arm of the finished runs (as the table names it): runs, fuzzy picks, picks on corrupted cases, the
    picks a random choice of the same size would put on corrupted cases, and the band radii used."""
    summary: dict[str, dict] = {}
    for path in sorted((Path(out) / "runs").glob("*/*/dale_partition.json")):
        metrics = path.parent / "metrics.json"
        if not metrics.exists():
            continue                                   # still training; the table leaves it out too
        arm_name = json.loads(metrics.read_text())["rows"][0]["network"]
        roles = json.loads((path.parent.parent / "cases.json").read_text())
        record = json.loads(path.read_text())
        corrupted = set(roles.get("corrupted", {}))
        labelled = roles.get("labeled") or [c["case"] for c in record["cases"]]
        fuzzy = [c["case"] for c in record["cases"] if c["fuzzy"]]
        arm = summary.setdefault(arm_name, {"runs": 0, "fuzzy": 0, "on_corrupted": 0, "chance": 0.0,
                                            "band_radii": []})
        arm["runs"] += 1
        arm["fuzzy"] += len(fuzzy)
        arm["on_corrupted"] += sum(case in corrupted for case in fuzzy)
        arm["chance"] += len(fuzzy) * len(corrupted & set(labelled)) / max(len(labelled), 1)
        arm["band_radii"].append(int(record["band_radius"]))
    return summary


def partition_lines(out: Path) -> list[str]:
    """One line per DALE arm of an experiment with corrupted labels; none without them."""
    lines = []
    for arm, s in partition_summary(out).items():
        if not s["chance"] and not s["on_corrupted"]:
            continue                                   # no corrupted case in any run: nothing to find
        radii = s["band_radii"]
        runs = f"{s['runs']} run{'s' if s['runs'] > 1 else ''}"
        lines.append(f"{arm}: {s['on_corrupted']} of {s['fuzzy']} fuzzy picks on corrupted cases "
                     f"(random picks: {s['chance']:.1f}) in {runs}; band radius median "
                     f"{statistics.median(radii):g} (range {min(radii)}-{max(radii)})")
    return lines
