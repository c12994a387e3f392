"""Training of the segmentation networks (losses so far; the trainer comes with issue 3)."""
