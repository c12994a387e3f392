"""Building nnU-Net v2 raw datasets from clinical exports (DICOM CT + RTSTRUCT) or image/label file pairs."""
