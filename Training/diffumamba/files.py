"""File helpers shared by every command: outputs appear whole or not at all, and a failed write says so.

Every output goes through ``atomic_output``: written under a unique hidden partial name (two runs never share
one), synced, verified by the caller, then renamed. A disk that fills up, a file-size limit or a read-only
folder becomes one ``OutputError`` naming the file, never a truncated file under the final name.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

__all__ = ["OutputError", "atomic_output", "atomic_write_bytes", "atomic_write_text", "partial_path", "is_partial",
           "write_error", "output_lock", "file_lock", "remove_orphans", "LOCK_NAME", "check_not_an_input",
           "refuse_existing", "content_digest", "check_writable_folder"]

LOCK_NAME = ".diffumamba.lock"
_PARTIAL = re.compile(r"^\..*\.partial(?:-(\d+)-[0-9a-f]+)?(?:\.|$)")
_FULL_BELOW = 1 << 20      # less free space than this after a failed write: the disk is full


class OutputError(OSError):
    """An output problem the user can act on (full disk, unwritable file, busy folder); str() is the message."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def partial_path(path: str | os.PathLike, suffix: str | None = None) -> Path:
    """A unique hidden name beside ``path``: ``.NAME.partial-PID-RANDOM SUFFIX``.

    Unique so concurrent writers never share a file; the PID tells a later run whether the writer is dead (an
    orphan to remove); the suffix is kept because image writers choose the format by it; the leading dot makes
    dataset readers skip it.
    """
    path = Path(path)
    suffix = path.suffix if suffix is None else suffix
    stem = path.name[:len(path.name) - len(suffix)] if suffix and path.name.endswith(suffix) else path.name
    return path.with_name(f".{stem}.partial-{os.getpid()}-{secrets.token_hex(4)}{suffix}")


def is_partial(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a temporary file of an unfinished write (this version's or the older fixed name)."""
    return bool(_PARTIAL.match(Path(path).name))


def _writer_pid(path: Path) -> int | None:
    match = _PARTIAL.match(path.name)
    return int(match.group(1)) if match and match.group(1) else None


@contextmanager
def atomic_output(path: str | os.PathLike, suffix: str | None = None):
    """Yield a unique temporary path to write and verify; it replaces ``path`` only if the block succeeds.

    OSErrors (also those the block raises after a failed verification) become an ``OutputError`` naming
    ``path``; the temporary file never survives.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output folder does not exist: {path.parent}")
    temporary = partial_path(path, suffix)
    try:
        yield temporary
        if not temporary.is_file():
            raise OSError(errno.EIO, "nothing was written")
        _fsync(temporary)
        os.replace(temporary, path)
    except OSError as err:
        raise write_error(path, err, temporary) from err
    finally:
        temporary.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all; the size on disk is checked before the rename."""
    with atomic_output(path) as temporary:
        with open(temporary, "xb") as handle:      # ordinary permissions (umask), unlike mkstemp's 0600
            handle.write(data)
        if temporary.stat().st_size != len(data):
            raise OSError(errno.EIO, f"only {temporary.stat().st_size} of {len(data)} bytes reached the disk")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_error(path: Path, cause: BaseException | str, temporary: Path | None = None) -> OutputError:
    """The error for a failed write of ``path``: a full disk is named as such, anything else keeps its reason."""
    if isinstance(cause, OutputError):
        return cause
    code = getattr(cause, "errno", None)
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)) or (
            code in (None, errno.EIO, errno.EFBIG) and _free_bytes(Path(path).parent) < _FULL_BELOW):
        return OutputError(errno.ENOSPC, f"no space left on {_mount_point(Path(path).parent)} while writing {path}: "
                                         "free some space and run again")
    reason = getattr(cause, "strerror", None) or str(cause)
    if temporary is not None:                        # writers name the hidden temporary file; the user knows ``path``
        reason = reason.replace(str(temporary), str(path)).replace(Path(temporary).name, Path(path).name)
    if code == errno.EFBIG or (temporary is not None and _at_size_limit(temporary)):
        reason += " (the file size limit, ulimit -f, was reached)"
    return OutputError(code or errno.EIO, f"could not write {path}: {reason}")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _free_bytes(folder: Path) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return _FULL_BELOW


def _mount_point(folder: Path) -> str:
    path = os.path.realpath(folder)
    while not os.path.ismount(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def _at_size_limit(path: Path) -> bool:
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        return limit != resource.RLIM_INFINITY and path.stat().st_size >= limit
    except (ImportError, OSError):
        return False


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (os.kill(pid, 0) would send Ctrl-C on Windows, so ask the kernel there)."""
    if pid <= 0:
        return False
    if os.name == "nt":
        import ctypes

        handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, pid)   # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        ctypes.windll.kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        ctypes.windll.kernel32.CloseHandle(handle)
        return code.value == 259                                            # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_orphans(folder: Path) -> list[Path]:
    """Remove partial files in ``folder`` left by writers that are no longer running (killed runs)."""
    removed = []
    for path in Path(folder).iterdir() if Path(folder).is_dir() else ():
        pid = _writer_pid(path)
        if is_partial(path) and path.is_file() and (pid is None or (pid != os.getpid() and not _alive(pid))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _lock_pid(lock: Path) -> int | None:
    try:
        text = lock.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


@contextmanager
def output_lock(folder: Path, option: str = "--out", lock_name: str = LOCK_NAME, target: Path | None = None):
    """Hold ``folder/.diffumamba.lock`` (created exclusively, holding our PID) while a run writes there.

    A second run is refused, so two runs never mix their outputs; a lock left by a dead run is taken over and
    that run's orphaned partial files are removed. ``lock_name`` and ``target`` (what the refusal names) lock
    one file instead of the folder (``file_lock``).
    """
    folder = Path(folder)
    lock = folder / lock_name
    shown = target if target is not None else folder
    deadline = time.monotonic() + 2.0
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pid = _lock_pid(lock)
            if pid is not None and _alive(pid):
                raise OutputError(errno.EBUSY, f"another run is writing {shown} (pid {pid}); wait for it or "
                                               f"choose another {option}") from None
            if pid is None and time.monotonic() < deadline:
                time.sleep(0.05)                     # a starting run has created the lock but not written its PID
                continue
            _take_over(lock, pid, shown, option)
            continue
        except OSError as err:
            raise write_error(target if target is not None else lock, err) from err
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{os.getpid()}\n")
        break
    try:
        remove_orphans(folder)
        yield lock
    finally:
        if _lock_pid(lock) == os.getpid():
            lock.unlink(missing_ok=True)


def _take_over(lock: Path, stale_pid: int | None, shown: Path, option: str) -> None:
    """Move a dead run's lock aside; if another run took it over first, leave theirs and refuse."""
    aside = lock.with_name(f"{lock.name}.stale-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        os.rename(lock, aside)
    except FileNotFoundError:
        return                                       # someone else removed it; try to create ours again
    grabbed = _lock_pid(aside)
    if grabbed != stale_pid and grabbed is not None and _alive(grabbed):
        try:
            os.link(aside, lock)                     # a live run's fresh lock: give it back
        except OSError:
            pass
        aside.unlink(missing_ok=True)
        raise OutputError(errno.EBUSY, f"another run is writing {shown} (pid {grabbed}); wait for it or choose "
                                       f"another {option}")
    aside.unlink(missing_ok=True)


def file_lock(path: Path, option: str = "--output"):
    """``output_lock`` for one output file (``.NAME.diffumamba.lock`` beside it): two runs writing the same file are
    refused, so no reply describes a file that another run replaced; runs writing other files of the folder go on.
    Dead writers' partial files in the folder are removed as with a folder lock."""
    path = Path(path)
    return output_lock(path.parent, option, f".{path.name}{LOCK_NAME}", target=path)


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file: the same resolved path, or (hard links, bind mounts) the same inode."""
    try:
        if os.path.realpath(a) == os.path.realpath(b):
            return True
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_not_an_input(output: Path, inputs: dict, option: str = "--output") -> None:
    """Refuse an output that is one of the run's inputs (``inputs``: option -> path or None), before any work.

    The rule every command that writes a named file follows: an output never replaces an input. Written through
    a link or under another spelling of the same path, a corrected mask would otherwise replace the patient's CT
    (issue 28, D2). An input folder (a DICOM series) counts for every file inside it.
    """
    output = Path(output)
    for name, path in inputs.items():
        if path is None:
            continue
        path = Path(path)
        inside = path.is_dir() and Path(os.path.realpath(path)) in Path(os.path.realpath(output)).parents
        if _same_file(output, path) or inside:
            raise ValueError(f"{option} {output} would replace {name} {path}" + (" (it lies inside it)" if inside
                             else "") + f": an output never replaces an input; choose another {option}")


def refuse_existing(paths, option: str = "--out", overwrite: str = "--overwrite") -> None:
    """Refuse to replace files that already exist (an edited segmentation, an earlier result), naming them; the
    caller's ``overwrite`` option allows it. Checked before any work, so a refusal costs nothing."""
    existing = [Path(p) for p in paths if Path(p).exists()]
    if existing:
        more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        names = ", ".join(p.name for p in existing[:3]) + more
        them = "it" if len(existing) == 1 else "them"
        raise OutputError(errno.EEXIST, f"{existing[0].parent} already holds {names}, which this run would "
                                        f"replace; move {them} away, choose another {option}, or add {overwrite}")


def check_writable_folder(folder: Path, option: str = "--out") -> None:
    """Refuse, before any work, an output folder that is a file or that cannot be written in (read-only, no
    permission): it is probed by creating and removing a hidden file in it or in its nearest existing parent, the
    one test that holds for root, read-only mounts and network shares alike. Nothing is left behind."""
    import tempfile

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{option} {folder} is a file; give a folder (it is created if missing)")
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        tempfile.TemporaryFile(dir=existing, prefix=".diffumamba-probe-").close()   # removed as it closes
    except OSError as err:
        raise write_error(folder, err) from err


CONTENT_BLOCK = 1 << 20


def content_digest(path: Path) -> str:
    """SHA-256 of what ``path`` holds: a file's bytes, or every file under a folder (relative name, size, bytes).

    For caches that must notice any change of content, also one that keeps the modification time (``cp -p``,
    ``rsync -t``, unzip, DICOM files overwritten in place, which leave the folder's time alone). It reads
    everything: 54 ms for a 70 MB DICOM CT series (page-cached, 1.3 GB/s here).
    """
    import hashlib

    path = Path(path)
    digest = hashlib.sha256()
    members = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for member in members:
        relative = "" if member == path else member.relative_to(path).as_posix()
        digest.update(f"{relative}\0{member.stat().st_size}\0".encode())
        with open(member, "rb") as handle:
            for block in iter(lambda: handle.read(CONTENT_BLOCK), b""):
                digest.update(block)
    return digest.hexdigest()
