"""The comparison table: mean ± sd per network and the paired difference to a baseline with its 95% CI.

The unit of pairing is the independent unit: the case, or the patient when cases are grouped (two visits of
one patient are not independent samples). Each unit's metric is first averaged over seeds (repeated
measurements of one unit) and over its cases, then the per-unit differences network - baseline give a mean
with a Student-t 95% confidence interval and a two-sided Wilcoxon signed-rank p-value.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from typing import Mapping, Optional, Sequence

__all__ = ["unit_means", "paired_difference", "compare", "markdown_table", "difference_cell"]

METRICS = ("dice", "hd95_mm", "band_dice")    # band_dice: absent from rows scored before it existed


def unit_means(rows: Sequence[dict], metric: str, groups: Optional[Mapping[str, str]] = None
               ) -> dict[tuple[str, str], dict[str, float]]:
    """(network, label) -> {unit: metric averaged over seeds, then over the unit's cases}.

    ``groups`` maps case -> group (patient); without it every case is its own unit.
    """
    per_case: dict = defaultdict(lambda: defaultdict(list))
    for row in rows:
        per_case[(row["network"], row["label"])][row["case"]].append(float(row[metric]))
    result = {}
    for key, cases in per_case.items():
        units: dict = defaultdict(list)
        for case, values in cases.items():
            units[groups[case] if groups else case].append(statistics.fmean(values))
        result[key] = {unit: statistics.fmean(v) for unit, v in units.items()}
    return result


def paired_difference(values: Sequence[float], baseline: Sequence[float]) -> dict:
    """Mean difference with a t-based 95% CI and the Wilcoxon signed-rank p-value."""
    from scipy import stats

    differences = [a - b for a, b in zip(values, baseline)]
    n = len(differences)
    mean = statistics.fmean(differences)
    if n < 2:
        return {"mean": mean, "ci_low": math.nan, "ci_high": math.nan, "p_wilcoxon": math.nan, "n": n}
    half = stats.t.ppf(0.975, n - 1) * statistics.stdev(differences) / math.sqrt(n)
    nonzero = [d for d in differences if d != 0]
    p = float(stats.wilcoxon(nonzero).pvalue) if len(nonzero) >= 1 else 1.0
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "p_wilcoxon": p, "n": n}


def compare(rows: Sequence[dict], baseline: str, groups: Optional[Mapping[str, str]] = None) -> list[dict]:
    """One entry per (network, label): n units, mean/sd per metric over units, paired difference to ``baseline``."""
    metrics = [m for m in METRICS if all(m in r for r in rows)]
    per_metric = {metric: unit_means(rows, metric, groups) for metric in metrics}
    networks = list(dict.fromkeys(r["network"] for r in rows))
    labels = list(dict.fromkeys(r["label"] for r in rows))
    entries = []
    for label in labels:
        for network in networks:
            entry = {"network": network, "label": label,
                     "runs": len({(r["fold"], r["seed"]) for r in rows if r["network"] == network}),
                     "empty_predictions": sum(bool(r["pred_empty"]) and not bool(r["ref_empty"]) for r in rows
                                              if r["network"] == network and r["label"] == label)}
            for metric in metrics:
                mine = per_metric[metric].get((network, label), {})
                base = per_metric[metric].get((baseline, label), {})
                values = list(mine.values())
                entry[metric] = {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1
                                 else 0.0, "n": len(values)}
                if network != baseline and base:
                    common = sorted(set(mine) & set(base))
                    entry[metric]["vs_baseline"] = paired_difference([mine[c] for c in common], [base[c] for c in common])
            entries.append(entry)
    return entries


def markdown_table(entries: Sequence[dict], baseline: str, unit: str = "cases") -> str:
    """Dice and HD95 with their paired differences, then the boundary-band Dice (``band_dice``) when scored."""
    band = bool(entries) and all("band_dice" in e for e in entries)
    header = [f"| label | network | runs | {unit} | Dice mean ± sd | HD95 (mm) mean ± sd | "
              f"ΔDice vs {baseline} [95% CI], p | ΔHD95 vs {baseline} (mm) [95% CI], p | empty predictions |"]
    if band:
        header.append(f" band Dice mean ± sd | Δband Dice vs {baseline} [95% CI], p |")
    lines = ["".join(header), "|---|---|---|---|---|---|---|---|---|" + ("---|---|" if band else "")]
    for e in entries:
        cells = [e["label"], e["network"], str(e["runs"]), str(e["dice"]["n"]),
                 f"{e['dice']['mean']:.3f} ± {e['dice']['sd']:.3f}", f"{e['hd95_mm']['mean']:.1f} ± {e['hd95_mm']['sd']:.1f}"]
        cells += [difference_cell(e, metric, baseline, digits) for metric, digits in (("dice", 3), ("hd95_mm", 1))]
        cells.append(str(e["empty_predictions"]))
        if band:
            cells += [f"{e['band_dice']['mean']:.3f} ± {e['band_dice']['sd']:.3f}", difference_cell(e, "band_dice", baseline, 3)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def difference_cell(entry: dict, metric: str, baseline: str, digits: int) -> str:
    """``+0.050 [+0.010, +0.090], p=0.03``: an entry's paired difference to the baseline, as every table writes it."""
    d = entry[metric].get("vs_baseline")
    if entry["network"] == baseline:
        return "(baseline)"
    if d is None:
        return "n/a"
    if d["n"] < 2:
        return f"{d['mean']:+.{digits}f} (one pair: no CI)"
    return f"{d['mean']:+.{digits}f} [{d['ci_low']:+.{digits}f}, {d['ci_high']:+.{digits}f}], p={d['p_wilcoxon']:.2g}"
