"""Resources as files `<root>/<repo>/<type>/<tag>` (the classic KBS repository layout).

Writes go through `atomic_write`, so a crash leaves the old or the new resource, never a partial
one; a leftover temporary file is hidden (its name starts with ".", which no resource name can) and
removed at the next start once it is old enough not to belong to another replica's write in progress.
Paths are built only from validated parts; reads open each component below the root without
following symlinks, writes and deletions check that the resolved location stays under the root.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

from kbs.store.base import ResourceNotFound, ResourcePath, StoreError
from protocols.atomicfile import TEMP_MARK, atomic_write

STALE_TEMP_SECONDS = 3600.0
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
MAX_RESOURCE_BYTES = 64 * 1024 * 1024


class FileResourceStore:
    inline = True

    def __init__(self, root: Path) -> None:
        try:
            root.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.root = root.resolve(strict=True)
        except OSError as exc:
            raise StoreError(f"cannot use resource directory {root}: {exc.strerror}") from None
        self._remove_stale_temps()

    def _remove_stale_temps(self) -> None:
        cutoff = time.time() - STALE_TEMP_SECONDS
        for tmp in self.root.glob(f"*/*/.*{TEMP_MARK}*"):
            try:
                if tmp.lstat().st_mtime < cutoff:
                    tmp.unlink()
            except OSError:
                continue

    def _file(self, path: ResourcePath) -> Path:
        file = self.root / path.repo / path.type / path.tag
        parent = file.parent.resolve()
        if parent != self.root and self.root not in parent.parents:
            raise StoreError(f"resource {path} resolves outside the resource directory")
        return parent / path.tag

    def get(self, path: ResourcePath) -> bytes:
        """Opened one component at a time below the root, none of them followed if a symlink: the
        file read is inside the root whatever the tree holds (and no path resolution per read)."""
        fds: list[int] = []
        try:
            fds.append(os.open(self.root, os.O_RDONLY | os.O_DIRECTORY))
            for directory in (path.repo, path.type):
                fds.append(os.open(directory, _DIRECTORY_FLAGS, dir_fd=fds[-1]))
            fds.append(os.open(path.tag, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fds[-1]))
            size = os.fstat(fds[-1]).st_size
            if size > MAX_RESOURCE_BYTES:
                raise StoreError(f"resource {path} is larger than {MAX_RESOURCE_BYTES} bytes")
            # Resources are replaced by rename, never grown in place: the size read is final.
            return _read(fds[-1], size)
        except FileNotFoundError:
            raise ResourceNotFound(f"resource {path} not found") from None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise StoreError(f"resource {path}: a symbolic link or a file in the way") from None
            raise StoreError(f"cannot read resource {path}: {exc.strerror}") from None
        finally:
            for fd in fds:
                os.close(fd)

    def put(self, path: ResourcePath, data: bytes) -> None:
        try:
            (self.root / path.repo / path.type).mkdir(parents=True, exist_ok=True, mode=0o700)
            atomic_write(self._file(path), data)
        except OSError as exc:
            raise StoreError(f"cannot write resource {path}: {exc.strerror}") from None

    def delete(self, path: ResourcePath) -> None:
        try:
            self._file(path).unlink()
        except FileNotFoundError:
            raise ResourceNotFound(f"resource {path} not found") from None
        except OSError as exc:
            raise StoreError(f"cannot delete resource {path}: {exc.strerror}") from None


def _read(fd: int, size: int) -> bytes:
    chunks, remaining = [], size
    while remaining > 0:
        chunk = os.read(fd, remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
