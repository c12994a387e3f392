"""A CT loaded "through the DICOM browser", as Slicer 5.12's DICOM module leaves it in the scene, and the DICOM
database calls a module makes.

What the DICOM module does (Slicer v5.12.3):
- ``Modules/Scripted/DICOMLib/DICOMPlugin.py:281-295`` ``defaultSeriesNodeName``: the node is named
  ``<SeriesNumber>: <SeriesDescription>`` ("Unnamed Series" when both are empty);
  ``Modules/Scripted/DICOMPlugins/DICOMScalarVolumePlugin.py:175-182`` ``cleanNodeName`` replaces only ``|``, ``/``,
  ``\\`` (by ``-``) and ``*`` (by ``(star)``): the ``:`` stays, so the clinical path gives names like ``2: CT``.
- ``DICOMPlugin.addSeriesInSubjectHierarchy``: the volume carries ``DICOM.instanceUIDs`` (its SOP instance UIDs,
  space separated); its subject hierarchy item sits in a study item inside a patient item, each with the
  ``DICOM.*`` attributes named by ``vtkMRMLSubjectHierarchyConstants`` (patient ID/name/birth date/sex/comments;
  study instance UID/ID/description/date/time) and the ``DICOM`` UID.

``DICOMDatabase`` stands in for ``ctkDICOMDatabase`` (CTK 5056664a ``Libs/DICOM/Core/ctkDICOMDatabase.cpp``):
``fileForInstance`` returns an empty string for an instance it does not hold (never raises); ``DICOMUtils`` for
``DICOMLib.DICOMUtils.importDicom(dicomDataDir, dicomDatabase=None, copyFiles=False)``, which indexes a folder's
DICOM files into the database (``slicer.dicomDatabase`` by default). No header of either is in the reference
folder, so these are plain classes with only the members named here.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

__all__ = ["DICOMDatabase", "node_name", "load_series", "install"]


def node_name(series_number, series_description) -> str:
    """``defaultSeriesNodeName`` then ``cleanNodeName`` (the database gives tag values as text: series number 0
    is "0", which is not empty)."""
    number = "" if series_number is None else str(series_number)
    name = "" if series_description is None else str(series_description)
    if number:
        name = f"{number}: {name}"
    if not name:
        name = "Unnamed Series"
    return name.replace("|", "-").replace("/", "-").replace("\\", "-").replace("*", "(star)")


class DICOMDatabase:
    """``ctkDICOMDatabase``: instance UID -> file."""

    def __init__(self, files=()):
        self._files = {}
        for path in files:
            self._index(path)

    def _index(self, path) -> bool:
        import pydicom

        try:
            header = pydicom.dcmread(str(path), stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - not DICOM: the indexer skips it
            return False
        self._files[str(header.SOPInstanceUID)] = str(Path(path))
        return True

    def fileForInstance(self, sopInstanceUID):
        """ctkDICOMDatabase::fileForInstance: "" when the instance is not in the database."""
        return self._files.get(str(sopInstanceUID), "")

    def instancesIndexed(self):     # not a ctkDICOMDatabase member: what the tests read back
        return dict(self._files)


def install(session, database: DICOMDatabase, monkeypatch):
    """``slicer.dicomDatabase`` and an importable ``DICOMLib.DICOMUtils`` (restored by ``monkeypatch``)."""
    session.slicer.dicomDatabase = database
    utils = types.ModuleType("DICOMLib.DICOMUtils")

    def importDicom(dicomDataDir, dicomDatabase=None, copyFiles=False):
        target = dicomDatabase or getattr(sys.modules["slicer"], "dicomDatabase", None)
        if target is None:
            raise RuntimeError("no DICOM database")
        for path in sorted(Path(dicomDataDir).rglob("*")):
            if path.is_file():
                target._index(path)

    utils.importDicom = importDicom
    package = types.ModuleType("DICOMLib")
    package.DICOMUtils = utils
    monkeypatch.setitem(sys.modules, "DICOMLib", package)
    monkeypatch.setitem(sys.modules, "DICOMLib.DICOMUtils", utils)
    return database


def load_series(session, files, work: Path):
    """The CT series ``files`` loaded as the DICOM module loads it: named, carrying its instance UIDs, in its
    patient and study items; returns the volume node. The voxels and geometry are read by SimpleITK (what
    ``DICOMScalarVolumePlugin`` does through ITK), written to an uncompressed NRRD and read by MRML."""
    import pydicom
    import SimpleITK as sitk
    import slicer

    headers = [pydicom.dcmread(str(f), stop_before_pixels=True) for f in files]
    first = headers[0]
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(Path(files[0]).parent), str(first.SeriesInstanceUID)))
    work.mkdir(parents=True, exist_ok=True)
    image_path = work / "dicom_series.nrrd"
    sitk.WriteImage(reader.Execute(), str(image_path), False)
    scene = session.scene
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode",
                                     node_name(first.get("SeriesNumber"), first.get("SeriesDescription")))
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(image_path))
    if not storage.ReadData(volume):
        raise OSError(f"could not read {image_path}")
    volume.SetAttribute("DICOM.instanceUIDs", " ".join(str(h.SOPInstanceUID) for h in headers))

    constants = slicer.vtkMRMLSubjectHierarchyConstants
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    uid_name = constants.GetDICOMUIDName()
    patient_id = str(first.get("PatientID", ""))
    patient = hierarchy.GetItemByUID(uid_name, patient_id) if patient_id else 0
    if not patient:
        patient = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), str(first.get("PatientName", "")) or
                                              "Anonymous")
        hierarchy.SetItemUID(patient, uid_name, patient_id)
        for getter, keyword in ((constants.GetDICOMPatientIDAttributeName, "PatientID"),
                                (constants.GetDICOMPatientNameAttributeName, "PatientName"),
                                (constants.GetDICOMPatientBirthDateAttributeName, "PatientBirthDate"),
                                (constants.GetDICOMPatientSexAttributeName, "PatientSex"),
                                (constants.GetDICOMPatientCommentsAttributeName, "PatientComments")):
            hierarchy.SetItemAttribute(patient, getter(), str(first.get(keyword, "")))
    study_uid = str(first.StudyInstanceUID)
    study = hierarchy.GetItemByUID(uid_name, study_uid)
    if not study:
        study = hierarchy.CreateStudyItem(patient, str(first.get("StudyDescription", "")) or "Unnamed study")
        hierarchy.SetItemUID(study, uid_name, study_uid)
        for getter, keyword in ((constants.GetDICOMStudyInstanceUIDAttributeName, "StudyInstanceUID"),
                                (constants.GetDICOMStudyIDAttributeName, "StudyID"),
                                (constants.GetDICOMStudyDescriptionAttributeName, "StudyDescription"),
                                (constants.GetDICOMStudyDateAttributeName, "StudyDate"),
                                (constants.GetDICOMStudyTimeAttributeName, "StudyTime")):
            hierarchy.SetItemAttribute(study, getter(), str(first.get(keyword, "")))
    series = hierarchy.GetItemByDataNode(volume) or hierarchy.CreateItem(study, volume)
    hierarchy.SetItemParent(series, study)
    hierarchy.SetItemUID(series, uid_name, str(first.SeriesInstanceUID))
    hierarchy.SetItemAttribute(series, constants.GetDICOMSeriesModalityAttributeName(), str(first.Modality))
    hierarchy.SetItemAttribute(series, constants.GetDICOMSeriesNumberAttributeName(),
                               str(first.get("SeriesNumber", "")))
    return volume
