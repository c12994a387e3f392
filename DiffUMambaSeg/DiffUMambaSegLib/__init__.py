"""The DiffUMambaSeg module's logic, one job per file, none importing Qt (testable outside Slicer).

``runner``: the ``diffumamba`` command line in a subprocess, with progress and cancel;
``catalog``: the model catalog, checksum-verified downloads and offline import;
``scene``: volume and segmentation nodes <-> files (MRML only, no application).
"""
