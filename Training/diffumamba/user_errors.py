"""Which errors are the user's to fix, and the one line that tells them how.

Errors the user can fix (bad files, bad options, a full disk, an unwritable folder, too little memory) are reported
as one ``error:`` line naming the file; anything else is a bug and keeps its traceback. The entry point (``cli``)
and the commands that report errors themselves (``predict``'s JSON progress, ``serve``'s answers) share this
module, so the commands never import the entry point that imports them.
"""

from __future__ import annotations

import errno
import re

from .files import OutputError

__all__ = ["UserError", "USER_ERRORS", "USER_ERRNOS", "is_user_error", "describe"]


class UserError(Exception):
    """A problem with the user's input, reported without a traceback."""


USER_ERRORS = (UserError, ValueError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError,
               FileExistsError, MemoryError, OutputError)
USER_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EEXIST, errno.ENOTDIR, errno.EISDIR,
               errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}
_ERRNO_HINTS = {errno.ENOSPC: "free some space or write elsewhere", errno.EROFS: "the file system is read-only; "
                "write elsewhere", errno.EACCES: "check its permissions or write elsewhere", errno.EPERM:
                "check its permissions or write elsewhere", errno.EEXIST: "remove it or choose another name",
                errno.ENOTDIR: "a part of the path is a file, not a folder; choose another path",
                errno.EISDIR: "it is a folder; give a file", errno.EFBIG: "the file size limit (ulimit -f) was reached"}


# PyTorch's CPU allocator reports a failed allocation as a plain RuntimeError; only its own message tells it from a
# bug, so only that message is matched.
_CPU_ALLOCATOR_FAILED = re.compile(r"DefaultCPUAllocator: can't allocate memory: you tried to allocate (\d+) bytes")


def _out_of_memory(err: BaseException) -> bool:
    return (isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError"     # torch.cuda.OutOfMemoryError
            or (isinstance(err, RuntimeError) and _CPU_ALLOCATOR_FAILED.search(str(err)) is not None))


def is_user_error(err: BaseException) -> bool:
    """Whether ``err`` is the user's to fix (one error line) rather than a bug (a traceback)."""
    if isinstance(err, USER_ERRORS) or _out_of_memory(err):
        return True
    return isinstance(err, OSError) and err.errno in USER_ERRNOS


def describe(err: BaseException) -> str:
    """One line for a user error: OSErrors name their file and say what to do."""
    if _out_of_memory(err):
        allocation = _CPU_ALLOCATOR_FAILED.search(str(err))
        if allocation:
            size = int(allocation.group(1))
            reason = f"could not allocate {size / 1e9:,.1f} GB" if size >= 1e8 else f"could not allocate {size:,} bytes"
        else:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else "out of memory"
        return f"{reason}: not enough memory; close other programs, use smaller images or another --device"
    if isinstance(err, OSError) and not isinstance(err, OutputError) and err.strerror:
        names = " -> ".join(str(n) for n in (err.filename, err.filename2) if n is not None) or "a file"
        hint = _ERRNO_HINTS.get(err.errno)
        return f"{names}: {err.strerror}" + (f"; {hint}" if hint else "")
    return str(err)
