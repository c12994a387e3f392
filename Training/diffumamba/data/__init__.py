"""Datasets in the nnU-Net v2 raw format and their fingerprints."""

from .dataset import Case, RawDataset

__all__ = ["Case", "RawDataset"]
