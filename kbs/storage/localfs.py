"""`LocalFs`: a file per key in `<dir_path>/<namespace>/` (upstream's layout: a `/` in a key is
written `\\x2F` in the file name), for replicas that share one filesystem.

Writes replace a file whole (temporary, rename), so a reader sees the old value or the new; a
no-overwrite `set` links the temporary into place, which fails if the key exists, so two replicas
cannot both create it. `replace` holds an advisory lock on the namespace's `.lock` file while it
compares and writes; every writer that replaces a value takes that lock too. `durable` namespaces
are fsynced (resources, policies); sessions are not: losing them at a power cut only ends handshakes.

Each operation is one or two system calls on a local file, so they run on the event loop.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from kbs.storage.base import StorageError, StorageUnavailable, check_key
from protocols.atomicfile import atomic_write_at, is_temp_name, temp_name

_SLASH = "\\x2F"
_LOCK = ".lock"
_READ_CHUNK = 1 << 20
_ANY = Path("key")  # temporaries are named at random, whatever the key: no Path per write


def file_name(key: str) -> str:
    return check_key(key).replace("/", _SLASH)


class LocalFsStorage:
    def __init__(self, dir_path: Path, namespace: str, *, durable: bool = True) -> None:
        self.namespace = namespace
        self._durable = durable
        self._dir = dir_path / namespace
        try:
            self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._fd = os.open(self._dir, os.O_RDONLY | os.O_DIRECTORY)
            # kept open: an open costs as much as the write it guards; flock locks belong to the
            # open file, so other processes still exclude this one, and no await runs inside
            self._lock = os.open(_LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600, dir_fd=self._fd)
        except OSError as exc:
            raise StorageError(f"cannot use storage directory {self._dir}: {exc.strerror}") from None

    def _fail(self, doing: str, key: str, exc: OSError) -> StorageUnavailable:
        return StorageUnavailable(f"LocalFs {self.namespace}: cannot {doing} {key[:80]!r}: {exc.strerror}")

    def _write(self, name: str, value: bytes) -> None:
        if self._durable:
            atomic_write_at(self._fd, name, value)
            return
        tmp = temp_name(_ANY).name
        self._write_temp(tmp, value)
        os.replace(tmp, name, src_dir_fd=self._fd, dst_dir_fd=self._fd)

    def _write_temp(self, tmp: str, value: bytes) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=self._fd)
        try:
            view = memoryview(value)
            while view:
                view = view[os.write(fd, view) :]
            if self._durable:
                os.fsync(fd)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock, fcntl.LOCK_UN)

    async def set(self, key: str, value: bytes, *, overwrite: bool = True) -> bool:
        name = file_name(key)
        try:
            if overwrite:
                with self._locked():
                    self._write(name, value)
                return True
            tmp = temp_name(_ANY).name
            self._write_temp(tmp, value)
            try:
                os.link(tmp, name, src_dir_fd=self._fd, dst_dir_fd=self._fd, follow_symlinks=False)
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp, dir_fd=self._fd)
            if self._durable:
                os.fsync(self._fd)
            return True
        except OSError as exc:
            raise self._fail("write", key, exc) from None

    def _read(self, name: str) -> bytes | None:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=self._fd)
        except FileNotFoundError:
            return None
        try:
            chunks = []  # os.read on the descriptor: a file object around it costs more than the read
            while chunk := os.read(fd, _READ_CHUNK):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    async def get(self, key: str) -> bytes | None:
        name = file_name(key)
        try:
            return self._read(name)
        except OSError as exc:
            raise self._fail("read", key, exc) from None

    async def replace(self, key: str, expected: bytes, value: bytes) -> bool:
        name = file_name(key)
        try:
            with self._locked():
                if self._read(name) != expected:
                    return False
                self._write(name, value)
                return True
        except OSError as exc:
            raise self._fail("replace", key, exc) from None

    async def delete(self, key: str) -> bytes | None:
        name = file_name(key)
        try:
            with self._locked():
                value = self._read(name)
                if value is not None:
                    os.unlink(name, dir_fd=self._fd)
                return value
        except OSError as exc:
            raise self._fail("delete", key, exc) from None

    async def list(self) -> list[str]:
        try:
            names = os.listdir(self._fd)  # noqa: PTH208 - by descriptor, as every other call here
        except OSError as exc:
            raise self._fail("list", "", exc) from None
        return sorted(name.replace(_SLASH, "/") for name in names if name != _LOCK and not is_temp_name(name))

    async def close(self) -> None:
        for fd in (self._lock, self._fd):
            with contextlib.suppress(OSError):
                os.close(fd)
