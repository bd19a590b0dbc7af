"""`Memory`: one namespace in this process's memory (upstream's default): one replica, lost on exit.

Every method runs without awaiting, so on one event loop each is atomic: `replace` needs no lock.
"""

from __future__ import annotations

from kbs.storage.base import check_key


class MemoryStorage:
    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._items: dict[str, bytes] = {}

    async def set(self, key: str, value: bytes, *, overwrite: bool = True) -> bool:
        check_key(key)
        if not overwrite and key in self._items:
            return False
        self._items[key] = bytes(value)
        return True

    async def get(self, key: str) -> bytes | None:
        return self._items.get(key)

    async def replace(self, key: str, expected: bytes, value: bytes) -> bool:
        if self._items.get(key) != expected:
            return False
        self._items[key] = bytes(value)
        return True

    async def delete(self, key: str) -> bytes | None:
        return self._items.pop(key, None)

    async def list(self) -> list[str]:
        return sorted(self._items)

    async def close(self) -> None:
        return None
