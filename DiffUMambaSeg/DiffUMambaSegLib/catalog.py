"""The model catalog (``Resources/Models.json``): which models exist, where to get them, what they are for.

An entry's ``url`` is http(s)://, file://, or a path without a scheme: a file shipped inside the extension,
relative to the catalog file's folder (the module's ``Resources/``) and never outside it. Ids and versions are
plain names (they become cache folders). ``research_only`` (default true: a model is for research unless its
entry says ``"research_only": false``) keeps the panel from pre-selecting it and makes it ask for an
acknowledgement before its first run. Fetching, verifying and caching are ``model_cache.py``'s job.
Format and how to add a model: ``docs/model_catalog.md``.
"""

from __future__ import annotations

import json
import math
import re
import urllib.parse
from pathlib import Path
from typing import Optional

from .model_cache import ModelCache
from .model_entry import CatalogError, ModelEntry, name_problem, resolve_url

__all__ = ["CatalogError", "ModelEntry", "load_catalog", "resolve_url", "describe", "for_task", "version_key"]

REQUIRED = ("id", "name", "version", "task", "input_channels", "url", "sha256", "license")
TASKS = ("segmentation", "propagation", "correction")    # correction: the click model of "Correct with clicks"
SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _metric_ok(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_optional(item: dict, where: str) -> None:
    for key in ("intended_use", "description"):
        if key in item and not isinstance(item[key], str):
            raise CatalogError(f"{where}: {key} must be text")
    if "accuracy" in item:
        accuracy = item["accuracy"]
        if not isinstance(accuracy, dict):
            raise CatalogError(f"{where}: accuracy must be an object of metric name -> number "
                               f"(and an optional \"dataset\" text)")
        if "dataset" in accuracy and not isinstance(accuracy["dataset"], str):
            raise CatalogError(f"{where}: accuracy.dataset must be text (where the accuracy was measured)")
        bad = [k for k, v in accuracy.items() if k != "dataset" and not _metric_ok(v)]
        if bad:
            shown = ", ".join(f"{k}={accuracy[k]!r}" for k in bad)
            raise CatalogError(f"{where}: accuracy values must be numbers, not {shown}")
        if not any(k != "dataset" for k in accuracy):
            raise CatalogError(f"{where}: accuracy names no metric (e.g. {{\"dice\": 0.71}})")
    if "seconds" in item and (not isinstance(item["seconds"], dict)
                              or not all(_metric_ok(v) for v in item["seconds"].values())):
        raise CatalogError(f"{where}: seconds must be an object like {{\"cpu\": 34, \"gpu\": 6}}")
    if "size_bytes" in item and (not isinstance(item["size_bytes"], int) or isinstance(item["size_bytes"], bool)):
        raise CatalogError(f"{where}: size_bytes must be an integer")
    if "research_only" in item and not isinstance(item["research_only"], bool):
        raise CatalogError(f"{where}: research_only must be true or false")


def load_catalog(path: Path) -> list[ModelEntry]:
    """Entries of a catalog file; every problem is named with the entry it is in."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CatalogError(f"cannot read the model catalog {path}: {err}") from None
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, list):
        raise CatalogError(f"{path}: expected an object with a 'models' list")
    folder = str(Path(path).resolve().parent)
    entries, seen = [], set()
    for index, item in enumerate(models):
        where = f"{path}: model {index + 1}" + (f" ({item.get('id')})" if isinstance(item, dict) and "id" in item else "")
        if not isinstance(item, dict):
            raise CatalogError(f"{where}: expected an object")
        missing = [key for key in REQUIRED if key not in item]
        if missing:
            raise CatalogError(f"{where}: missing {', '.join(missing)}")
        if item["task"] not in TASKS:
            raise CatalogError(f"{where}: task must be one of {', '.join(TASKS)}, not {item['task']!r}")
        if not SHA256.match(str(item["sha256"])):
            raise CatalogError(f"{where}: sha256 must be 64 lower-case hex digits")
        channels = item["input_channels"]
        if not isinstance(channels, list) or not channels or not all(isinstance(c, str) for c in channels):
            raise CatalogError(f"{where}: input_channels must be a non-empty list of names")
        if not isinstance(item["url"], str):
            raise CatalogError(f"{where}: url must be text")
        for key in ("id", "version"):
            problem = name_problem(key, item[key])
            if problem:
                raise CatalogError(f"{where}: {problem}")
        _check_optional(item, where)
        try:
            resolved = resolve_url(item["url"], folder)
        except CatalogError as err:
            raise CatalogError(f"{where}: {err}") from None
        key = (item["id"], item["version"])
        if key in seen:
            raise CatalogError(f"{where}: {item['id']} {item['version']} is listed twice")
        seen.add(key)
        entries.append(ModelEntry(str(item["id"]), str(item["name"]), str(item["version"]), item["task"],
                                  tuple(channels), item["url"], str(item["sha256"]), str(item["license"]),
                                  item.get("description", ""), item.get("size_bytes"), dict(item.get("seconds", {})),
                                  item.get("intended_use", ""), dict(item.get("accuracy", {})), folder, resolved,
                                  item.get("research_only", True)))
    return entries


def version_key(version: str) -> tuple:
    """Orders versions by semantic-versioning precedence: "0.10.0" after "0.9.1", "1.0" before "1.0.1", a
    pre-release before its release ("1.0.0-alpha" < "1.0.0-alpha.2" < "1.0.0-rc.1" < "1.0.0-rc.10" < "1.0.0"), and
    a release part that is not a number ("0rc1") before any number in its place (so "1.0.0rc1" < "1.0.0" too)."""
    core, dash, pre = version.partition("-")
    release = tuple((1, int(part), "") if part.isdigit() else (0, 0, part) for part in core.split("."))
    if not dash:
        return release, (1,)
    return release, (0, tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in pre.split(".")))


def for_task(entries, task: str) -> list:
    """The entries of ``task`` as a model list shows them: the default first (the highest version of that task; the
    first listed among equal versions), then the others in catalog order. A model of one task is never offered for
    another (a click model is not a segmentation model, nor the reverse)."""
    chosen = [entry for entry in entries if entry.task == task]
    if not chosen:
        return []
    default = max(chosen, key=lambda entry: version_key(entry.version))   # max keeps the first of equal versions
    return [default] + [entry for entry in chosen if entry is not default]


_ABBREVIATIONS = {"dice": "Dice", "hd": "HD", "hd95": "HD95", "assd": "ASSD", "asd": "ASD", "nsd": "NSD",
                  "iou": "IoU", "msd": "MSD", "ppv": "PPV", "auc": "AUC"}
_UNITS = {"_mm": " mm", "_ml": " ml", "_s": " s", "_percent": "%", "_pct": "%"}


def _format_metric(name: str, value) -> str:
    unit = next((u for suffix, u in _UNITS.items() if name.endswith(suffix)), "")
    label = name[: -len(next(s for s in _UNITS if name.endswith(s)))] if unit else name
    words = [_ABBREVIATIONS.get(word.lower(), word) for word in label.split("_") if word]
    label = " ".join(words) or name
    label = label[0].upper() + label[1:]
    number = f"{value:.4g}" if isinstance(value, float) else str(value)
    return f"{label} {number}{unit}"


def _format_size(size: Optional[int]) -> str:
    if not size:
        return ""
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    return ""


def describe(entry: ModelEntry, cache=None) -> str:
    """The panel's text for ``entry``: name and version, task, intended use, accuracy (with where it was
    measured), license, measured run time, and whether it is in ``cache`` (a ``model_cache.ModelCache``;
    default: the user's cache)."""
    if cache is None:

        cache = ModelCache()
    research = " (research model, not for clinical use)" if entry.research_only else ""
    lines = [f"{entry.name} {entry.version}{research}",
             f"Task: {entry.task} (input: {', '.join(entry.input_channels)})",
             f"Intended use: {entry.intended_use or 'not stated'}"]
    if entry.metrics:
        text = ", ".join(_format_metric(k, v) for k, v in entry.metrics.items())
        dataset = entry.accuracy.get("dataset")
        lines.append(f"Accuracy: {text}" + (f" (measured on {dataset})" if dataset else ""))
    else:
        lines.append("Accuracy: not stated")
    lines.append(f"License: {entry.license}")
    if entry.seconds:
        times = ", ".join(f"{v:g} s on {k.upper()}" for k, v in entry.seconds.items())
        lines.append(f"Measured run time: {times}")
    if cache.is_cached(entry):
        lines.append(f"Cached: yes ({cache.folder(entry)})")
    else:
        size = _format_size(entry.size_bytes)
        host = urllib.parse.urlsplit(entry.url).netloc or entry.url
        origin = ("shipped with the extension" if entry.shipped
                  else f"download{' of ' + size if size else ''} from {host}")
        lines.append(f"Cached: no ({origin})")
    if entry.description:
        lines.append(entry.description)
    return "\n".join(lines)
