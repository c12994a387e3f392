"""Training: the trainer, its batches and sampling, augmentation, losses, checkpoints and the methods (supervised, DALE,
Diff-CL)."""
