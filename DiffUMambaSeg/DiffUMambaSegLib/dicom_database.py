"""The module's two uses of Slicer's DICOM database, kept out of the module file so they are tested.

``series_files``: the files of the DICOM series a volume was loaded from. The DICOM module stores the series'
SOP instance UIDs on the volume (``DICOM.instanceUIDs``, space separated) and ``ctkDICOMDatabase::fileForInstance``
maps each to its file, returning "" for an instance the open database does not hold (a scene from an .mrb made
on another workstation, a database moved or cleared). ``Path("")`` is ``Path(".")``: every such UID must stop
the export with a clear message, never become a link to Slicer's working directory.

``import_files``: what Slicer's own DICOM export dialog does after writing, so an RTSTRUCT or SEG the module
wrote shows in the DICOM browser beside its CT, ready to send to PACS or a planning system
(``DICOMUtils.importDicom`` indexes a folder into ``slicer.dicomDatabase``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

__all__ = ["INSTANCE_UIDS", "NOT_IN_DATABASE", "series_files", "import_files"]

INSTANCE_UIDS = "DICOM.instanceUIDs"
NOT_IN_DATABASE = "the CT's DICOM files are not in this Slicer's DICOM database"


def series_files(volume, database) -> list[Path]:
    """The series files of ``volume``: [] when it was not loaded from DICOM; raises ``FileNotFoundError`` when
    any of its instances is not in ``database`` (or there is no database) or its file is gone."""
    uids = (volume.GetAttribute(INSTANCE_UIDS) or "").split()
    if not uids:
        return []
    if database is None:
        raise FileNotFoundError(f"{NOT_IN_DATABASE} (no DICOM database is open): import the CT's DICOM folder "
                                "in the DICOM module, or export a label map or .seg.nrrd instead.")
    files = [str(database.fileForInstance(uid) or "") for uid in uids]
    missing = [uid for uid, file in zip(uids, files) if not file]
    if missing:
        raise FileNotFoundError(f"{NOT_IN_DATABASE} ({len(missing)} of {len(uids)} instances missing, e.g. "
                                f"{missing[0]}): import the CT's DICOM folder in the DICOM module, or export a "
                                "label map or .seg.nrrd instead.")
    gone = [file for file in files if not Path(file).is_file()]
    if gone:
        raise FileNotFoundError(f"the CT's DICOM file {gone[0]} is listed in the DICOM database but is not on "
                                "disk: re-import the CT's DICOM folder in the DICOM module.")
    return [Path(file) for file in files]


def import_files(folders: Sequence[Path], importer: Optional[Callable[[str], object]],
                 log: Callable[[str], None]) -> bool:
    """Add the folders the DICOM files were written into to the DICOM database through ``importer`` (in Slicer
    ``DICOMUtils.importDicom``: it indexes every DICOM file of the folder, which the database keeps once); logs
    what happened; False when there is no database or the import failed (the files stay on disk either way)."""
    folders = sorted({str(Path(folder)) for folder in folders})
    if importer is None:
        log("Not added to the DICOM database (no DICOM database is open): import the folder in the DICOM module "
            "to send it on.")
        return False
    try:
        for folder in folders:
            importer(folder)
    except Exception as error:  # noqa: BLE001 - the export itself succeeded; say why the import did not
        log(f"Exported, but could not add it to the DICOM database: {error}")
        return False
    log(f"Added to the DICOM database: {', '.join(folders)} (shown in the DICOM module beside the CT).")
    return True
