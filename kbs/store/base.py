"""Resource addressing and the store interface every backend implements.

A resource is `<repo>/<type>/<tag>`, each part upstream's pattern `[a-zA-Z0-9_-]+[a-zA-Z0-9_.-]*`:
it cannot start with ".", so "." and ".." (and our hidden temporary files) are never addressable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

_PART = re.compile(r"[a-zA-Z0-9_\-]+[a-zA-Z0-9_\-.]*", re.ASCII)
MAX_PART_CHARS = 255


class StoreError(Exception):
    """The backend failed (I/O, service error); the message says what and where."""


class ResourceNotFound(StoreError):
    pass


class StoreUnavailable(StoreError):
    """The backend cannot be reached for now; the same request may succeed later (503)."""


class InvalidResourcePath(ValueError):
    """Not `<repo>/<type>/<tag>` with upstream's characters."""


@dataclass(frozen=True, slots=True)
class ResourcePath:
    repo: str
    type: str
    tag: str

    @classmethod
    def parse(cls, parts: list[str] | tuple[str, ...]) -> ResourcePath:
        if len(parts) != 3 or not all(
            len(part) <= MAX_PART_CHARS and _PART.fullmatch(part) for part in parts
        ):
            raise InvalidResourcePath("illegal ResourceDesc format.")
        return cls(*parts)

    def __str__(self) -> str:
        return f"{self.repo}/{self.type}/{self.tag}"


class ResourceStore(Protocol):
    """Blocking calls. `inline` says reads are quick local operations (a small file, memory) that an
    event loop may run directly; otherwise (network services) async callers use a thread."""

    inline: bool

    def get(self, path: ResourcePath) -> bytes:
        """The resource, or `ResourceNotFound`."""
        ...

    def put(self, path: ResourcePath, data: bytes) -> None:
        """Create or replace, atomically."""
        ...

    def delete(self, path: ResourcePath) -> None:
        """Remove, or `ResourceNotFound`."""
        ...


class AsyncResourceStore(Protocol):
    """What the broker uses: `kbs.store.kv` natively, the blocking stores through
    `kbs.store.threaded`. Errors as `ResourceStore`'s."""

    async def get(self, path: ResourcePath) -> bytes: ...

    async def put(self, path: ResourcePath, data: bytes) -> None: ...

    async def delete(self, path: ResourcePath) -> None: ...
