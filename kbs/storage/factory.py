"""Upstream's `[storage_backend]`: one backend type for every namespace, `session_storage_type`
for the sessions' namespace alone, the backends' settings shared.

Type names are upstream's (with its serde aliases). Defaults as upstream: LocalFs
`/opt/confidential-containers/storage/local_fs`, LocalJson `.../local_json`, Postgres and Redis
as in their modules, whose `POSTGRES_URL` / `REDIS_URL` take precedence over the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kbs.storage.base import SESSIONS, KeyValueStorage, StorageError
from kbs.storage.localfs import LocalFsStorage
from kbs.storage.localjson import LocalJsonStorage
from kbs.storage.memory import MemoryStorage

MEMORY, LOCAL_FS, LOCAL_JSON, POSTGRES, REDIS = "Memory", "LocalFs", "LocalJson", "Postgres", "Redis"
TYPES = {
    "Memory": MEMORY,
    "memory": MEMORY,
    "LocalFs": LOCAL_FS,
    "local_fs": LOCAL_FS,
    "LocalJson": LOCAL_JSON,
    "local_json": LOCAL_JSON,
    "Postgres": POSTGRES,
    "postgres": POSTGRES,
    "Redis": REDIS,
    "redis": REDIS,
}
SHARED = (LOCAL_FS, LOCAL_JSON, POSTGRES, REDIS)  # what replicas can share
DEFAULT_LOCAL_FS = Path("/opt/confidential-containers/storage/local_fs")
DEFAULT_LOCAL_JSON = Path("/opt/confidential-containers/storage/local_json")


def storage_type(value: Any, where: str) -> str:
    kind = TYPES.get(value) if isinstance(value, str) else None
    if kind is None:
        raise StorageError(
            f"{where} {str(value)[:40]!r} is not one of {', '.join(sorted(set(TYPES.values())))}"
        )
    return kind


@dataclass(frozen=True)
class StorageSettings:
    type: str = MEMORY
    session_type: str = MEMORY
    local_fs: Path = DEFAULT_LOCAL_FS
    local_json: Path = DEFAULT_LOCAL_JSON
    postgres: Mapping[str, Any] = field(default_factory=dict)
    redis: Mapping[str, Any] = field(default_factory=dict)

    def type_of(self, namespace: str) -> str:
        return self.session_type if namespace == SESSIONS else self.type

    @property
    def shared(self) -> bool:
        """Whether replicas (or workers) can share every namespace."""
        return self.type in SHARED and self.session_type in SHARED


class StorageFactory:
    """Opens namespaces; the namespaces on one database share its connection pool."""

    def __init__(self, settings: StorageSettings) -> None:
        self.settings = settings
        self._backends: dict[str, Any] = {}
        self._opened: list[KeyValueStorage] = []

    async def close(self) -> None:
        """Close every namespace this factory opened (and so the backends' connections)."""
        opened, self._opened = self._opened, []
        for storage in opened:
            await storage.close()

    def open(self, namespace: str) -> KeyValueStorage:
        """The namespace in its configured backend; closed by `close`."""
        storage = self._open(namespace)
        self._opened.append(storage)
        return storage

    def _open(self, namespace: str) -> KeyValueStorage:
        kind = self.settings.type_of(namespace)
        if kind == MEMORY:
            return MemoryStorage(namespace)
        if kind == LOCAL_FS:
            return LocalFsStorage(self.settings.local_fs, namespace, durable=namespace != SESSIONS)
        if kind == LOCAL_JSON:
            return LocalJsonStorage(self.settings.local_json, namespace)
        if kind == POSTGRES:
            from kbs.storage.postgres import PostgresBackend, postgres_url  # the kbs extra's driver

            backend = self._backends.get(POSTGRES) or PostgresBackend(postgres_url(self.settings.postgres))
            self._backends[POSTGRES] = backend
            return backend.namespace(namespace)
        from kbs.storage.redis import RedisBackend, redis_url

        backend = self._backends.get(REDIS) or RedisBackend(redis_url(self.settings.redis))
        self._backends[REDIS] = backend
        return backend.namespace(namespace)
