"""Crash-safe file replacement: readers see the old content or the new, never a partial file.

Shared by everything that persists state: the adaptor's tunnel identities, the KBS's resources and
policies, the attestation service's shared files, process-user-data's outputs in the pod VM.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

TEMP_MARK = ".tmp-"


def _temp() -> str:
    """A temporary name of fixed, short length: one built from the target's name would pass the
    255-byte NAME_MAX for a valid 234-255 character name. It starts with ".", so no valid resource
    or policy name can hit it."""
    return f"{TEMP_MARK}{secrets.token_hex(8)}"


def temp_name(path: Path) -> Path:
    """A sibling temporary name (see `_temp`)."""
    return path.with_name(_temp())


def is_temp_name(name: str) -> bool:
    """A temporary of `atomic_write`: `.tmp-<hex>`, or `.<name>.tmp-<hex>` as earlier versions left."""
    return name.startswith(".") and TEMP_MARK in name


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write `data` to a temporary sibling, fsync it, rename it over `path`, fsync the directory.

    The rename is atomic on POSIX filesystems; the fsyncs order it after the data on disk, so after a
    crash `path` holds either its previous content or `data`. Raises OSError."""
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        atomic_write_at(directory, path.name, data, mode)
    finally:
        os.close(directory)


def atomic_write_at(directory: int, name: str, data: bytes, mode: int = 0o600) -> None:
    """`atomic_write` of `name` in the directory open as `directory`: nothing is resolved by path,
    so a caller that opened the directory without following links writes exactly there."""
    tmp = _temp()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode, dir_fd=directory)
    try:
        try:
            os.fchmod(fd, mode)  # exactly `mode`, whatever the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=directory, dst_dir_fd=directory)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=directory)
        raise
    os.fsync(directory)
