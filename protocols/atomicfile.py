"""Crash-safe file replacement: readers see the old content or the new, never a partial file.

Shared by everything that persists state: the adaptor's tunnel identities, the KBS's resources and
policies, the attestation service's shared files, process-user-data's outputs in the pod VM.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

TEMP_MARK = ".tmp-"


def temp_name(path: Path) -> Path:
    """A sibling temporary name; it starts with "." so no valid resource or policy name can hit it."""
    return path.with_name(f".{path.name}{TEMP_MARK}{secrets.token_hex(8)}")


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write `data` to a temporary sibling, fsync it, rename it over `path`, fsync the directory.

    The rename is atomic on POSIX filesystems; the fsyncs order it after the data on disk, so after a
    crash `path` holds either its previous content or `data`. Raises OSError."""
    tmp = temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        try:
            os.fchmod(fd, mode)  # exactly `mode`, whatever the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
