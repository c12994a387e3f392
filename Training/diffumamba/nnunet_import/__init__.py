"""Import official nnU-Net-format results folders (Diff-UMamba, U-Mamba Bot) as our model packages (issue 16).

So far: the checkpoint reader that never runs pickled code (``pth``). The key mapping, the plan conversion and the
``import-nnunet`` command are still to come.
"""
