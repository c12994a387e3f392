"""Training methods (``--method``): supervised, supervised with Diff-CL's high-frequency module (its control arm),
DALE (noisy labels in fuzzy regions) and Diff-CL (semi-supervised)."""

from __future__ import annotations

from .base import Supervised, SupervisedHighFrequency, TrainingMethod

__all__ = ["METHOD_NAMES", "build_method", "parse_method_arm", "TrainingMethod"]

METHOD_NAMES = ("supervised", "supervised-hf", "dale", "diffcl")
SETTINGS_OF = {"dale": "dale", "diffcl": "diffcl", "supervised-hf": "diffcl"}   # whose --X-* settings it reads


def build_method(name: str) -> type[TrainingMethod]:
    """The method class ``name`` names (imported on demand: Diff-CL pulls in the diffusion code)."""
    if name == "supervised":
        return Supervised
    if name == "supervised-hf":
        return SupervisedHighFrequency
    if name == "dale":
        from .dale import Dale

        return Dale
    if name == "diffcl":
        from .diffcl import DiffCL

        return DiffCL
    raise ValueError(f"unknown training method {name!r}; choose one of {', '.join(METHOD_NAMES)}")


def parse_method_arm(arm: str) -> tuple[str, dict]:
    """``METHOD[:NAME=VALUE,...]`` (an experiment's ablation arm, e.g. ``diffcl:contrastive_weight=0``) ->
    (method, ``{settings group: {name: value}}``), the values typed as the setting's default. Refuses an unknown
    method, a method without settings, an unknown setting and a value of the wrong type, naming the arm."""
    from dataclasses import fields

    from .settings import METHOD_SETTINGS

    method, _, given = arm.partition(":")
    build_method(method)
    if not given:
        return method, {}
    group = SETTINGS_OF.get(method)
    if group is None:
        raise ValueError(f"arm {arm!r}: --method {method} has no settings to change")
    types = {f.name: type(f.default) for f in fields(METHOD_SETTINGS[group])}
    options = {}
    for item in given.split(","):
        name, equals, value = item.partition("=")
        name = name.strip().replace("-", "_")
        if not equals or name not in types:
            raise ValueError(f"arm {arm!r}: {item!r} is not NAME=VALUE with NAME one of {sorted(types)}")
        try:
            options[name] = types[name](value)
        except ValueError:
            raise ValueError(f"arm {arm!r}: {name} needs a {types[name].__name__}, not {value!r}") from None
    return method, {group: options}
