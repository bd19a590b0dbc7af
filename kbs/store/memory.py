"""Resources in process memory (upstream's default `Memory` storage): lost on restart, one replica."""

from __future__ import annotations

import threading

from kbs.store.base import ResourceNotFound, ResourcePath


class MemoryResourceStore:
    inline = True

    def __init__(self) -> None:
        self._items: dict[ResourcePath, bytes] = {}
        self._lock = threading.Lock()

    def get(self, path: ResourcePath) -> bytes:
        with self._lock:
            data = self._items.get(path)
        if data is None:
            raise ResourceNotFound(f"resource {path} not found")
        return data

    def put(self, path: ResourcePath, data: bytes) -> None:
        with self._lock:
            self._items[path] = bytes(data)

    def delete(self, path: ResourcePath) -> None:
        with self._lock:
            if self._items.pop(path, None) is None:
                raise ResourceNotFound(f"resource {path} not found")
