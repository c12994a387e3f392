"""The DiffUMambaSeg module's code, one job per file; only ``panel`` touches Qt, the rest is tested without it.

``logic``: start, poll, cancel and finish runs of the ``diffumamba`` command line (``runner``: the subprocess
with progress and cancel; ``flows``: nodes -> files -> command; ``result_writer``: the result into the output
segmentation, undoable, never over the user's edits); ``panel``: the buttons, model list and progress;
``editor``: the embedded Segment Editor's life cycle; ``correction``: click corrections through the persistent
worker (``correction_worker``: the ``serve --stdio`` process; ``correction_scene``: clicks, masks and results in
MRML; ``correction_panel``: the Include / Exclude place widgets and the status line, its timer injected);
``environment``: PythonSlicer and the shipped package; ``install``: dependencies from the package's pyproject;
``catalog``: the model catalog; ``model_cache``: verified downloads and imports into the user's cache;
``model_download``: downloads in the background; ``scene``: volume and segmentation nodes <-> files;
``rt_study_export``: SlicerRT's exporter, when present; ``self_test``: the in-Slicer test.
"""
