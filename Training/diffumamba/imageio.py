"""Image files: reading with a message a user can act on, and writing so a file appears whole or not at all.

ITK's NIfTI writer reports a failed write (full disk, file-size limit) only on stderr, and its reader fills a
truncated ``.nii.gz`` with zeros without complaint; so every NIfTI read and every written image is checked
here against the voxel data its header promises. The same reader (SimpleITK 2.5.7) turns the NaN and Inf voxels
of a float NIfTI into 0, which hides them from every NaN/Inf check downstream; the pass over the voxel data that
measures its length also finds them, and they are put back as NaN.
"""

from __future__ import annotations

import errno
import struct
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np

from . import files
from .data.dataset import nonfinite_count

__all__ = ["IMAGE_SUFFIXES", "read_scalar_image", "partial_path", "atomic_output", "write_image_atomic",
           "write_image_verified", "nifti_voxel_bytes"]

# Longest first where one ends another (".seg.nrrd" before ".nrrd").
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".seg.nrrd", ".nrrd", ".mha", ".mhd")


def read_scalar_image(path: Path, hint: str = "expected one value per voxel"):
    """The image at ``path``; unreadable, truncated and multi-component (vector/RGB) images raise ValueError.

    SimpleITK's own message is several lines of C++ context; only its last line (the reason) is kept. NaN/Inf
    voxels of a float NIfTI come back as NaN (ITK's reader makes them 0), so that callers refuse or replace them.
    """
    import SimpleITK as sitk

    path = Path(path)
    scan = None
    if path.is_file():
        try:
            scan = _scan_nifti(path, find_nonfinite=True)
        except OSError as err:
            raise ValueError(f"cannot read {path}: {err.strerror or err}") from None
        if scan and scan.present < scan.expected:
            raise ValueError(f"{path} is truncated or corrupt (expected {scan.expected} bytes of voxel data, found "
                             f"{scan.present}): re-export or re-copy it")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        raise ValueError(f"cannot read {path.name}: {str(err).strip().splitlines()[-1]}") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"{path.name} has {image.GetNumberOfComponentsPerPixel()} components per voxel; {hint}")
    if scan is not None and len(scan.nonfinite):
        image = _with_nan(image, scan.nonfinite, path)
    return image


def _with_nan(image, indices: np.ndarray, path: Path):
    """``image`` (same grid and metadata) with NaN at the flat voxel ``indices``: NIfTI stores x fastest, as the
    (z, y, x) C-order array of a SimpleITK image does, so a voxel's number in the file is its flat array index."""
    import SimpleITK as sitk

    array = sitk.GetArrayFromImage(image)
    if not np.issubdtype(array.dtype, np.floating) or array.size <= int(indices.max()):
        # Not seen for a float NIfTI read as one value per voxel; if ever, refuse rather than pass on the zeros.
        raise ValueError(f"{path} has {len(indices)} NaN/Inf voxel(s) that cannot be located in the image ITK reads "
                         f"({array.dtype}, {array.size} voxels): fix the image")
    array.reshape(-1)[indices] = np.nan
    restored = sitk.GetImageFromArray(array)
    restored.CopyInformation(image)
    for key in image.GetMetaDataKeys():
        restored.SetMetaData(key, image.GetMetaData(key))
    return restored


def nifti_voxel_bytes(path: Path) -> tuple[int, int] | None:
    """(bytes of voxel data the NIfTI header implies, bytes present) for a .nii/.nii.gz; None for other formats.

    A ``.nii.gz`` is decompressed to its end, so a cut gzip stream counts only what it holds. A file whose
    header cannot be parsed gives None too: ITK's reader then says what is wrong with it.
    """
    scan = _scan_nifti(Path(path))
    return None if scan is None else (scan.expected, scan.present)


class _NiftiScan(NamedTuple):
    expected: int                # bytes of voxel data the header implies
    present: int                 # bytes of voxel data the file holds
    nonfinite: np.ndarray        # flat voxel indices of the NaN/Inf values (float data, when asked for)


def _scan_nifti(path: Path, find_nonfinite: bool = False) -> Optional[_NiftiScan]:
    """One pass over the (decompressed) file: how much voxel data it holds and, with ``find_nonfinite``, where a
    float image has NaN/Inf values. None for other formats and for headers that cannot be parsed."""
    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz")):
        return None
    with open(path, "rb") as handle:
        stream = _gunzip(handle) if name.endswith(".gz") else iter(lambda: handle.read(1 << 22), b"")
        first, head = [], b""
        for chunk in stream:                        # the header may span several chunks
            first.append(chunk)
            head += chunk[:540 - len(head)]
            if len(head) == 540:
                break
        header = _nifti_header(head)
        if header is None:
            return None
        finder = _NonFiniteFinder(header) if find_nonfinite and header.dtype is not None else None
        total = 0
        for chunks in (first, stream):
            for chunk in chunks:
                total += len(chunk)
                if finder is not None:
                    finder.feed(chunk)
    return _NiftiScan(header.data_bytes, max(0, total - header.offset),
                      finder.indices() if finder is not None else np.empty(0, np.int64))


class _NonFiniteFinder:
    """The flat indices of the NaN/Inf voxels in a stream of chunks cut anywhere (even inside a value). Each chunk
    is tested where it lies (``nonfinite_count``: one sum), so an all-finite image costs no copy of itself."""

    def __init__(self, header: "_Header"):
        self.dtype, self.begin, self.end = header.dtype, header.offset, header.offset + header.data_bytes
        self.position = 0                  # stream bytes seen
        self.voxel = 0                     # index of the next whole voxel
        self.partial = b""                 # the first bytes of a value that a chunk boundary cut
        self.found: list[np.ndarray] = []

    def feed(self, chunk: bytes) -> None:
        start, self.position = self.position, self.position + len(chunk)
        view = memoryview(chunk)[max(self.begin - start, 0):max(self.end - start, 0)]
        if not len(view):
            return
        if self.partial:
            need = self.dtype.itemsize - len(self.partial)
            self.partial += bytes(view[:need])
            view = view[need:]
            if len(self.partial) < self.dtype.itemsize:
                return
            self._test(self.partial)
        whole = len(view) - len(view) % self.dtype.itemsize
        self._test(view[:whole])
        self.partial = bytes(view[whole:])

    def _test(self, data) -> None:
        values = np.frombuffer(data, self.dtype)
        if nonfinite_count(values):
            self.found.append(np.flatnonzero(~np.isfinite(values)) + self.voxel)
        self.voxel += len(values)

    def indices(self) -> np.ndarray:
        return np.concatenate(self.found) if self.found else np.empty(0, np.int64)


def _gunzip(handle):
    """The decompressed chunks of a gzip file, as far as they go: a cut or damaged stream just ends early
    (Python's gzip module would drop the last chunk with its EOFError)."""
    stream = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        while data := handle.read(1 << 20):
            while data:
                yield stream.decompress(data)
                data = stream.unused_data if stream.eof else b""
                if data:
                    if not data.startswith(b"\x1f\x8b"):
                        return                         # trailing padding after the last member
                    stream = zlib.decompressobj(16 + zlib.MAX_WBITS)
    except zlib.error:
        return


class _Header(NamedTuple):
    offset: int                  # where the voxel data begins
    data_bytes: int              # bytes of voxel data
    dtype: Optional[np.dtype]    # float32/float64 in the file's byte order; None for types that hold no NaN


_FLOAT_TYPES = {16: "f4", 64: "f8"}   # NIfTI datatype codes FLOAT32, FLOAT64


def _nifti_header(head: bytes) -> Optional[_Header]:
    """Where the voxel data begins, its length and its float type, from the first bytes of a NIfTI-1 or NIfTI-2
    file in either byte order."""
    for order in "<>":
        if len(head) >= 348 and struct.unpack(order + "i", head[:4])[0] == 348:
            dims = struct.unpack(order + "8h", head[40:56])
            datatype, bitpix = struct.unpack(order + "2h", head[70:74])
            offset = max(int(struct.unpack(order + "f", head[108:112])[0]), 352)
            break
        if len(head) >= 540 and struct.unpack(order + "i", head[:4])[0] == 540:
            dims = struct.unpack(order + "8q", head[16:80])
            datatype, bitpix = struct.unpack(order + "2h", head[12:16])
            offset = max(struct.unpack(order + "q", head[168:176])[0], 544)
            break
    else:
        return None
    if not 1 <= dims[0] <= 7 or bitpix <= 0:
        return None
    voxels = 1
    for size in dims[1:dims[0] + 1]:
        voxels *= max(int(size), 1)
    code = _FLOAT_TYPES.get(datatype)
    dtype = np.dtype(order + code) if code and np.dtype(code).itemsize * 8 == bitpix else None
    return _Header(offset, voxels * bitpix // 8, dtype)


def _image_suffix(path: Path) -> str:
    return next((s for s in IMAGE_SUFFIXES if Path(path).name.lower().endswith(s)), Path(path).suffix)


def partial_path(path: Path) -> Path:
    """A unique hidden temporary name beside ``path`` that keeps its image suffix (writers choose the format
    by it) and that dataset readers skip (leading dot)."""
    return files.partial_path(path, _image_suffix(path))


@contextmanager
def atomic_output(path: Path):
    """Yield a unique temporary image path to write; it replaces ``path`` only if the block succeeds."""
    with files.atomic_output(path, _image_suffix(path)) as temporary:
        yield temporary


def write_image_verified(image, path: Path) -> None:
    """Write a SimpleITK image to ``path`` and read it back; a failed or short write raises OSError."""
    import SimpleITK as sitk

    try:
        sitk.WriteImage(image, str(path), useCompression=True)
    except RuntimeError as err:
        raise OSError(errno.EIO, str(err).strip().splitlines()[-1]) from None
    verify_image(path, image.GetSize(), image.GetNumberOfComponentsPerPixel())


def verify_image(path: Path, size=None, components=None) -> None:
    """Raise OSError unless ``path`` reads back whole: header (size, components) and all voxel data."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise OSError(errno.EIO, f"it does not read back ({str(err).strip().splitlines()[-1]})") from None
    found = (tuple(reader.GetSize()), reader.GetNumberOfComponents())
    if (size is not None and found[0] != tuple(size)) or (components is not None and found[1] != components):
        raise OSError(errno.EIO, f"it reads back as {found[0]} x {found[1]} components, not {tuple(size)} x {components}")
    sizes = nifti_voxel_bytes(path)
    if sizes is not None:
        if sizes[1] < sizes[0]:
            raise OSError(errno.EIO, f"the file is truncated ({sizes[1]} of {sizes[0]} bytes of voxel data)")
        return
    try:
        reader.Execute()                               # NRRD/MHA readers fail on short data
    except RuntimeError as err:
        raise OSError(errno.EIO, f"it does not read back ({str(err).strip().splitlines()[-1]})") from None


def write_image_atomic(image, path: Path) -> None:
    """Write a SimpleITK image so that ``path`` appears whole and verified, or not at all (format from the suffix)."""
    with atomic_output(path) as temporary:
        write_image_verified(image, temporary)
