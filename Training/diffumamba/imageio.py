"""Image files: reading with a message a user can act on, and writing so a file appears whole or not at all.

ITK's NIfTI writer reports a failed write (full disk, file-size limit) only on stderr, and its reader fills a
truncated ``.nii.gz`` with zeros without complaint; so every NIfTI read and every written image is checked
here against the voxel data its header promises.
"""

from __future__ import annotations

import errno
import struct
import zlib
from contextlib import contextmanager
from pathlib import Path

from . import files

__all__ = ["IMAGE_SUFFIXES", "read_scalar_image", "partial_path", "atomic_output", "write_image_atomic",
           "write_image_verified", "nifti_voxel_bytes"]

# Longest first where one ends another (".seg.nrrd" before ".nrrd").
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".seg.nrrd", ".nrrd", ".mha", ".mhd")


def read_scalar_image(path: Path, hint: str = "expected one value per voxel"):
    """The image at ``path``; unreadable, truncated and multi-component (vector/RGB) images raise ValueError.

    SimpleITK's own message is several lines of C++ context; only its last line (the reason) is kept.
    """
    import SimpleITK as sitk

    path = Path(path)
    if path.is_file():
        try:
            sizes = nifti_voxel_bytes(path)
        except OSError as err:
            raise ValueError(f"cannot read {path}: {err.strerror or err}") from None
        if sizes and sizes[1] < sizes[0]:
            raise ValueError(f"{path} is truncated or corrupt (expected {sizes[0]} bytes of voxel data, found "
                             f"{sizes[1]}): re-export or re-copy it")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        raise ValueError(f"cannot read {path.name}: {str(err).strip().splitlines()[-1]}") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"{path.name} has {image.GetNumberOfComponentsPerPixel()} components per voxel; {hint}")
    return image


def nifti_voxel_bytes(path: Path) -> tuple[int, int] | None:
    """(bytes of voxel data the NIfTI header implies, bytes present) for a .nii/.nii.gz; None for other formats.

    A ``.nii.gz`` is decompressed to its end, so a cut gzip stream counts only what it holds. A file whose
    header cannot be parsed gives None too: ITK's reader then says what is wrong with it.
    """
    path = Path(path)
    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz")):
        return None
    total, head = 0, b""
    with open(path, "rb") as handle:
        for chunk in (_gunzip(handle) if name.endswith(".gz") else iter(lambda: handle.read(1 << 22), b"")):
            if len(head) < 540:
                head += chunk[:540 - len(head)]
            total += len(chunk)
    header = _nifti_header(head)
    if header is None:
        return None
    offset, expected = header
    return expected, max(0, total - offset)


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


def _nifti_header(head: bytes) -> tuple[int, int] | None:
    """(voxel data offset, voxel data bytes) from the first bytes of a NIfTI-1 or NIfTI-2 file."""
    for order in "<>":
        if len(head) >= 348 and struct.unpack(order + "i", head[:4])[0] == 348:
            dims = struct.unpack(order + "8h", head[40:56])
            bitpix = struct.unpack(order + "h", head[72:74])[0]
            offset = max(int(struct.unpack(order + "f", head[108:112])[0]), 352)
            break
        if len(head) >= 540 and struct.unpack(order + "i", head[:4])[0] == 540:
            dims = struct.unpack(order + "8q", head[16:80])
            bitpix = struct.unpack(order + "h", head[14:16])[0]
            offset = max(struct.unpack(order + "q", head[168:176])[0], 544)
            break
    else:
        return None
    if not 1 <= dims[0] <= 7 or bitpix <= 0:
        return None
    voxels = 1
    for size in dims[1:dims[0] + 1]:
        voxels *= max(int(size), 1)
    return offset, voxels * bitpix // 8


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
