"""Resources in the `repository` namespace of a key-value storage backend, key `<repo>/<type>/<tag>`
(upstream's `KvStorage` resource backend): how replicas on PostgreSQL or Redis share them."""

from __future__ import annotations

from kbs.storage import KeyValueStorage, StorageError, StorageUnavailable
from kbs.store.base import ResourceNotFound, ResourcePath, StoreError, StoreUnavailable


class KvResourceStore:
    def __init__(self, storage: KeyValueStorage) -> None:
        self._storage = storage

    async def get(self, path: ResourcePath) -> bytes:
        try:
            value = await self._storage.get(str(path))
        except StorageError as exc:
            raise _error(exc) from None
        if value is None:
            raise ResourceNotFound(f"resource {path} not found")
        return value

    async def put(self, path: ResourcePath, data: bytes) -> None:
        try:
            await self._storage.set(str(path), data)
        except StorageError as exc:
            raise _error(exc) from None

    async def delete(self, path: ResourcePath) -> None:
        try:
            deleted = await self._storage.delete(str(path))
        except StorageError as exc:
            raise _error(exc) from None
        if deleted is None:
            raise ResourceNotFound(f"resource {path} not found")


def _error(exc: StorageError) -> StoreError:
    return StoreUnavailable(str(exc)) if isinstance(exc, StorageUnavailable) else StoreError(str(exc))
