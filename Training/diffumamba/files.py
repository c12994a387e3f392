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
           "write_error", "output_lock", "remove_orphans", "LOCK_NAME"]

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
def output_lock(folder: Path, option: str = "--out"):
    """Hold ``folder/.diffumamba.lock`` (created exclusively, holding our PID) while a run writes there.

    A second run is refused, so two runs never mix their outputs; a lock left by a dead run is taken over and
    that run's orphaned partial files are removed.
    """
    folder = Path(folder)
    lock = folder / LOCK_NAME
    deadline = time.monotonic() + 2.0
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pid = _lock_pid(lock)
            if pid is not None and _alive(pid):
                raise OutputError(errno.EBUSY, f"another run is writing {folder} (pid {pid}); wait for it or "
                                               f"choose another {option}") from None
            if pid is None and time.monotonic() < deadline:
                time.sleep(0.05)                     # a starting run has created the lock but not written its PID
                continue
            _take_over(lock, pid, folder, option)
            continue
        except OSError as err:
            raise write_error(lock, err) from err
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{os.getpid()}\n")
        break
    try:
        remove_orphans(folder)
        yield lock
    finally:
        if _lock_pid(lock) == os.getpid():
            lock.unlink(missing_ok=True)


def _take_over(lock: Path, stale_pid: int | None, folder: Path, option: str) -> None:
    """Move a dead run's lock aside; if another run took it over first, leave theirs and refuse."""
    aside = lock.with_name(f"{LOCK_NAME}.stale-{os.getpid()}-{secrets.token_hex(4)}")
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
        raise OutputError(errno.EBUSY, f"another run is writing {folder} (pid {grabbed}); wait for it or choose "
                                       f"another {option}")
    aside.unlink(missing_ok=True)
