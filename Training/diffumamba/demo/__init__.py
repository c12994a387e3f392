"""The self-contained demo: synthetic CT phantoms, a short training run, prediction and evaluation."""
