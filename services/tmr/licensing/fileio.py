"""Small, durable file operations: atomic replace with fsync, bounded reads."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
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


class NotARegularFile(OSError):
    """The path names a FIFO, a device, a socket or a directory: never read as a file."""


def file_kind(mode: int) -> str:
    """What a non-regular ``st_mode`` is, in words (for logs and status)."""
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def read_limited(path: Path, limit: int) -> bytes:
    """Read at most limit + 1 bytes (enough to tell that a file is too large) of a regular
    file. The open never blocks (O_NONBLOCK: a FIFO would wait for a writer) and anything
    but a regular file is refused with `NotARegularFile` before a byte is read."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotARegularFile(errno.EINVAL, f"{file_kind(mode)}, not a regular file", str(path))
        chunks: list[bytes] = []
        left = limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
