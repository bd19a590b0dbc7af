"""Unpacking one layer stream into a rootfs: decompression, OCI whiteouts, the diff_id (sha256 of the
uncompressed tar) checked against the image config, and tarfile's `tar` filter against paths and
links that leave the rootfs."""

from __future__ import annotations

import gzip
import hashlib
import io
import shutil
import tarfile
import zlib
from pathlib import Path
from typing import BinaryIO

from podvm.cdh.errors import PullError

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
_GZIP_TYPES = ("tar+gzip", "tar.gzip")
_TAR_TYPES = ("v1.tar", "diff.tar")
BUFFER = 1024 * 1024  # large reads: every layer of the stream costs Python calls per read


class _Hashing(io.RawIOBase):
    """Passes reads through, hashing them (the diff_id)."""

    def __init__(self, source: BinaryIO) -> None:
        self._source = source
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        data = self._source.read(len(buffer))
        buffer[: len(data)] = data
        self.digest.update(data)
        return len(data)

    def drain(self) -> None:
        while self.read(1024 * 1024):
            pass


def unpack_layer(stream: BinaryIO, media_type: str, rootfs: Path, diff_id: str) -> None:
    """Apply one layer (a tar, possibly gzip-compressed) to `rootfs`."""
    base = media_type.removesuffix("+encrypted")
    if base.endswith(_GZIP_TYPES):
        source: BinaryIO = gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[assignment]
    elif base.endswith(_TAR_TYPES):
        source = stream
    else:
        raise PullError(
            "Errors happened when pulling image", f"unsupported layer media type {media_type[:80]}"
        )
    hashing = _Hashing(source)
    try:
        reader = io.BufferedReader(hashing, BUFFER)
        with tarfile.open(fileobj=reader, mode="r|", bufsize=BUFFER) as tar:
            for member in tar:
                _apply(tar, member, rootfs)
        hashing.drain()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise PullError("Errors happened when pulling image", f"layer unpack failed: {exc}") from None
    if f"sha256:{hashing.digest.hexdigest()}" != diff_id:
        raise PullError(
            "Errors happened when pulling image",
            f"unequal uncompressed digest sha256:{hashing.digest.hexdigest()} config diff_id {diff_id}",
        )


def _apply(tar: tarfile.TarFile, member: tarfile.TarInfo, rootfs: Path) -> None:
    path = Path(member.name.lstrip("/"))
    if ".." in path.parts:
        raise PullError(
            "Errors happened when pulling image", f"layer entry {member.name[:100]!r} leaves the rootfs"
        )
    name = path.name
    parent = _inside(rootfs, path.parent, member.name)
    if name == OPAQUE:
        if parent.is_dir():
            for child in parent.iterdir():
                _remove(child)
        return
    if name.startswith(WHITEOUT):
        _remove(parent / name[len(WHITEOUT) :])
        return
    target = parent / name
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        target.unlink()
    tar.extract(member, rootfs, filter="tar")


def _inside(rootfs: Path, relative: Path, name: str) -> Path:
    """`rootfs/relative` with symlinks resolved, refused unless it stays inside the rootfs (an earlier
    layer's symlink must not turn a whiteout or a replacement into a deletion outside)."""
    root = rootfs.resolve()
    resolved = (root / relative).resolve()
    if resolved != root and root not in resolved.parents:
        raise PullError("Errors happened when pulling image", f"layer entry {name[:100]!r} leaves the rootfs")
    return resolved


def _remove(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path)
