"""Inference: sliding-window prediction on preprocessed arrays and back onto the input grid."""
