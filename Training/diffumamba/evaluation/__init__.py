"""Segmentation metrics in millimetres and the per-case / summary reports of ``diffumamba evaluate``."""

from .metrics import METRIC_NAMES, label_metrics

__all__ = ["METRIC_NAMES", "label_metrics"]
