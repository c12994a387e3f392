"""Import official nnU-Net-format results folders (Diff-UMamba, U-Mamba Bot) as our model packages.

``pth`` reads a checkpoint without running pickled code, ``keys`` renames the official weights onto our networks,
``plans`` turns nnU-Net's plans into our plan, ``results_folder`` puts them together (``diffumamba import-nnunet``).
"""
