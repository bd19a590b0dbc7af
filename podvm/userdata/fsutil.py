"""Atomic file replacement, so a reader (systemd path units, services) never sees half a file."""

from __future__ import annotations

from pathlib import Path

from protocols.atomicfile import atomic_write as replace_atomically

DIR_MODE = 0o755
FILE_MODE = 0o644


def atomic_write(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    """Create the parent directories, then replace `path` atomically (see protocols.atomicfile)."""
    path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    replace_atomically(path, data, mode)
