"""Files that several attestation-service replicas share (policies, reference values).

Each replica keeps what it read with the file's `stamp` and re-reads when the stamp changes, so a
change made through one replica holds on the others at their next use, for the price of one stat.
Writers replace files whole (a fresh temporary, fsync, rename), so readers never see half a file and
each write gives a new inode; read-modify-write cycles take an advisory lock on a sibling file, so
two replicas cannot lose each other's update.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from protocols.atomicfile import atomic_write

Stamp = tuple[int, int, int, int]


def stamp(path: Path) -> Stamp:
    """What changes whenever the file is replaced or rewritten. Raises OSError."""
    st = path.stat()
    return (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)


def read(path: Path) -> tuple[Stamp, bytes]:
    """The file's content with the stamp of exactly that content. Raises OSError."""
    with path.open("rb") as handle:
        st = os.fstat(handle.fileno())
        return (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size), handle.read()


def replace(path: Path, data: bytes) -> None:
    """Replace `path` whole (temporary sibling, fsync, rename), so each write gives a new inode."""
    atomic_write(path, data)


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock for a read-modify-write of `path` (on `.<name>.lock` beside it)."""
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
