"""Small, durable file operations: atomic replace with fsync, bounded reads."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``path`` so a crash leaves the old or the new content, never a mix.

    The data goes to a temporary file in the same directory (created with ``mode``, so a
    secret is never readable by others), is fsynced, renamed over ``path``, and the directory
    is fsynced.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    except OSError as exc:  # name the file the caller asked for, not the temporary
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)  # the O_CREAT mode is filtered by the umask
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_limited(path: Path, limit: int) -> bytes:
    """Read at most limit + 1 bytes (enough to tell that a file is too large)."""
    with path.open("rb") as fh:
        return fh.read(limit + 1)
