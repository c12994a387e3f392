"""RTSTRUCT through SlicerRT's own exporter (``DicomRtImportExportPlugin``), when SlicerRT is installed.

SlicerRT's exporter writes an RT *study*: it refuses a segmentation alone (SlicerRT #184), so the CT and the
segmentation are examined together, and it writes a copy of the CT beside the RTSTRUCT, which references that
copy. Where the planning system must receive a structure set on the *original* CT series, the module's own
writer (``flows.prepare_dicom_export``) is the one to use; the export panel offers both.

The plugin is injected (``DicomExportPlugin``) so the glue is tested without the application.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

__all__ = ["DicomExportPlugin", "slicerrt_plugin", "export_rt_study", "study_tags"]

PLUGIN_NAME = "DicomRtImportExportPlugin"


class DicomExportPlugin(Protocol):
    """The part of Slicer's ``DICOMPlugin`` that exporting uses."""

    def examineForExport(self, subjectHierarchyItemID: int) -> list: ...

    def export(self, exportables: list) -> str: ...


def slicerrt_plugin(dicom_plugins) -> DicomExportPlugin | None:
    """SlicerRT's plugin from ``slicer.modules.dicomPlugins`` (None when SlicerRT is not installed)."""
    plugin_class = (dicom_plugins or {}).get(PLUGIN_NAME)
    return plugin_class() if plugin_class is not None else None


def study_tags(hierarchy, item: int) -> dict[str, str]:
    """The DICOM patient and study attributes the DICOM module stored on the item's ancestors (``DICOM.*``), so
    the exported study keeps the patient's identity instead of the exporter's placeholders."""
    prefix = "DICOM."
    tags: dict[str, str] = {}
    parent = hierarchy.GetItemParent(item)
    while parent and parent != hierarchy.GetSceneItemID():
        for name in hierarchy.GetItemAttributeNames(parent):
            if name.startswith(prefix):
                tags.setdefault(name[len(prefix):], hierarchy.GetItemAttribute(parent, name))
        parent = hierarchy.GetItemParent(parent)
    return tags


def export_rt_study(scene, plugin: DicomExportPlugin, segmentation, reference_volume, folder: Path) -> Path:
    """Export the CT and the segmentation as one RT study into ``folder``; raises with the exporter's message."""
    import slicer

    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    items = [hierarchy.GetItemByDataNode(node) for node in (reference_volume, segmentation)]
    if not all(items):
        raise ValueError("the CT and the segmentation must both be in the subject hierarchy to export a study")
    exportables = [exportable for item in items for exportable in plugin.examineForExport(item)]
    modalities = {exportable.tag("Modality") for exportable in exportables}
    if "RTSTRUCT" not in modalities:
        raise ValueError("SlicerRT found nothing to export as RTSTRUCT in this segmentation")
    folder.mkdir(parents=True, exist_ok=True)
    tags = study_tags(hierarchy, items[0])
    for exportable in exportables:
        exportable.directory = str(folder)
        for name, value in tags.items():
            exportable.setTag(name, value)
    error = plugin.export(exportables)
    if error:
        raise RuntimeError(f"SlicerRT could not export the study: {error}")
    return folder
