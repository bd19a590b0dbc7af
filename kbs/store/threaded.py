"""The blocking resource stores (files, memory, AWS) behind the async interface the broker uses.

Reads from an `inline` store (a small local file, memory) run on the event loop; writes (fsync)
and every call to a network service run in a thread.
"""

from __future__ import annotations

import asyncio

from kbs.store.base import ResourcePath, ResourceStore


class ThreadedResourceStore:
    def __init__(self, store: ResourceStore) -> None:
        self.store = store

    async def get(self, path: ResourcePath) -> bytes:
        if self.store.inline:
            return self.store.get(path)
        return await asyncio.to_thread(self.store.get, path)

    async def put(self, path: ResourcePath, data: bytes) -> None:
        await asyncio.to_thread(self.store.put, path, data)

    async def delete(self, path: ResourcePath) -> None:
        await asyncio.to_thread(self.store.delete, path)
