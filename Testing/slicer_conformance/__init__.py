"""slicer_conformance: run a scripted 3D Slicer module against Slicer 5.12's real Python layer.

Real: slicer.util, slicer.parameterNodeWrapper, slicer.ScriptedLoadableModule, slicer.i18n,
slicer.packaging (imported from the reference folder, $DIFFUMAMBA_SLICER_REFERENCE), every MRML
class (slicer-core wheel), vtk.  Stand-ins (strict, API lists from PySide6 and the C++ headers):
``qt``, ``ctk``, qMRML widgets, ``slicer.app``, ``slicer.dicomDatabase``.

    with SlicerSession(module_dir=..., work=tmp_path, testing=True) as session:
        session.load_module("Name"); w = session.show_module("Name"); ...

Files: qtapi.py (member lists), strict.py (PythonQt object model), widgets.py / ctkwidgets.py (Qt / CTK behaviour),
mrmlwidgets.py (qMRML widgets on the real scene), markups.py (a click in a view in place mode: what the C++ markups
widgets do to the real nodes), uiloader.py (.ui files), application.py (slicer.app, event loop, settings, dialogs),
session.py (assembly and module life cycle).
"""

from .qtapi import reference_dir
from .session import SlicerSession

__all__ = ["SlicerSession", "reference_dir"]
