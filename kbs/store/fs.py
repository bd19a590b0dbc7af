"""Resources as files `<root>/<repo>/<type>/<tag>` (the classic KBS repository layout).

Writes go through `atomic_write_at`, so a crash leaves the old or the new resource, never a partial
one; a leftover temporary file is hidden (its name starts with ".", which no resource name can) and
removed at the next start once it is old enough not to belong to another replica's write in progress.

Paths are built only from validated parts, and every operation walks them one directory at a time
from the root, by file descriptor, following no symbolic link: a link anywhere in the tree (a
repository directory pointing elsewhere, say) is refused before anything is created, written or read
through it. A file with other hard links is not served either: it may be a link to a file outside
the store, made by whoever could write into the tree.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kbs.store.base import ResourceNotFound, ResourcePath, StoreError
from protocols.atomicfile import atomic_write_at, is_temp_name

STALE_TEMP_SECONDS = 3600.0
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
MAX_RESOURCE_BYTES = 64 * 1024 * 1024
_LINKED = (errno.ELOOP, errno.ENOTDIR, errno.EEXIST)


class FileResourceStore:
    inline = True

    def __init__(self, root: Path) -> None:
        try:
            root.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.root = root.resolve(strict=True)
        except OSError as exc:
            raise StoreError(f"cannot use resource directory {root}: {exc.strerror}") from None
        self._remove_stale_temps()

    @contextmanager
    def _directory(self, path: ResourcePath, *, create: bool = False) -> Iterator[int]:
        """`<root>/<repo>/<type>` open (created 0700 where missing if `create`), walked without
        following links. Raises OSError: ELOOP/ENOTDIR when a component is a link or a file."""
        fds = [os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)]
        try:
            for name in (path.repo, path.type):
                if create:
                    # mkdir never follows a link in its last component: EEXIST for one
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(name, 0o700, dir_fd=fds[-1])
                fds.append(os.open(name, _DIRECTORY_FLAGS, dir_fd=fds[-1]))
            yield fds[-1]
        finally:
            for fd in fds:
                os.close(fd)

    def _remove_stale_temps(self) -> None:
        """Walked by descriptor, links not followed, like every other operation."""
        cutoff = time.time() - STALE_TEMP_SECONDS
        root = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for repo in _subdirectories(root):
                for kind in _subdirectories(repo):
                    for entry in os.scandir(kind):
                        if is_temp_name(entry.name) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                            with contextlib.suppress(OSError):
                                os.unlink(entry.name, dir_fd=kind)
        except OSError:
            pass  # cleaning up is best effort; the next start tries again
        finally:
            os.close(root)

    def get(self, path: ResourcePath) -> bytes:
        fd = -1
        try:
            with self._directory(path) as directory:
                # O_NONBLOCK: opening a FIFO planted in the tree must not wait for a writer
                fd = os.open(path.tag, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=directory)
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise StoreError(f"resource {path} is not a regular file")
            if info.st_nlink != 1:
                raise StoreError(f"resource {path} has other hard links: not served")
            if info.st_size > MAX_RESOURCE_BYTES:
                raise StoreError(f"resource {path} is larger than {MAX_RESOURCE_BYTES} bytes")
            # Resources are replaced by rename, never grown in place: the size read is final.
            return _read(fd, info.st_size)
        except FileNotFoundError:
            raise ResourceNotFound(f"resource {path} not found") from None
        except OSError as exc:
            raise _error(path, "read", exc) from None
        finally:
            if fd >= 0:
                os.close(fd)

    def put(self, path: ResourcePath, data: bytes) -> None:
        try:
            with self._directory(path, create=True) as directory:
                atomic_write_at(directory, path.tag, data)
        except OSError as exc:
            raise _error(path, "write", exc) from None

    def delete(self, path: ResourcePath) -> None:
        try:
            with self._directory(path) as directory:
                os.unlink(path.tag, dir_fd=directory)
        except FileNotFoundError:
            raise ResourceNotFound(f"resource {path} not found") from None
        except OSError as exc:
            raise _error(path, "delete", exc) from None


def _error(path: ResourcePath, doing: str, exc: OSError) -> StoreError:
    if exc.errno in _LINKED:
        return StoreError(f"resource {path}: a symbolic link or a file in the way (outside the store?)")
    return StoreError(f"cannot {doing} resource {path}: {exc.strerror}")


def _subdirectories(parent: int) -> Iterator[int]:
    """Each directory in `parent` (not a link to one), open until the caller moves on."""
    for entry in os.scandir(parent):
        if not entry.is_dir(follow_symlinks=False):
            continue
        try:
            fd = os.open(entry.name, _DIRECTORY_FLAGS, dir_fd=parent)
        except OSError:
            continue
        try:
            yield fd
        finally:
            os.close(fd)


def _read(fd: int, size: int) -> bytes:
    chunks, remaining = [], size
    while remaining > 0:
        chunk = os.read(fd, remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
