"""`Redis`: keys `{namespace}:{key}` with raw byte values (upstream's layout), over redis-py's
asyncio client; any RESP server (Redis, Valkey, KeyDB).

No-overwrite is `SET NX`; `replace` is a server-side script (GET, compare, SET), which Redis runs
atomically, so one replica wins a session. `list` walks `SCAN` rather than upstream's `KEYS`, which
blocks the server for the whole keyspace. The URL is `REDIS_URL` when set (as upstream), else
`[storage_backend.backends.redis] url`. Calls while the server is unreachable raise
`StorageUnavailable`; the client reconnects by itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import redis.asyncio
import redis.exceptions

from kbs.storage.base import StorageUnavailable, check_key

URL_ENV = "REDIS_URL"
DEFAULT_URL = "redis://127.0.0.1:6379"
TIMEOUT_SECONDS = 5.0
_COMPARE_AND_SET = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('SET', KEYS[1], ARGV[2])
    return 1
end
return 0
"""
_FAILURES = (redis.exceptions.RedisError, OSError, TimeoutError)


def redis_url(settings: Mapping[str, Any], environ: Mapping[str, str] = os.environ) -> str:
    return environ.get(URL_ENV) or str(settings.get("url") or DEFAULT_URL)


def _bytes(value: bytes | str) -> bytes:
    """The client returns bytes (no `decode_responses`); its types allow str too."""
    return value.encode("utf-8") if isinstance(value, str) else value


class RedisBackend:
    """One client (with its connection pool) for every namespace on one server."""

    def __init__(self, url: str) -> None:
        self.client: redis.asyncio.Redis = redis.asyncio.Redis.from_url(
            url,
            socket_timeout=TIMEOUT_SECONDS,
            socket_connect_timeout=TIMEOUT_SECONDS,
            retry_on_timeout=False,
        )
        self.compare_and_set = self.client.register_script(_COMPARE_AND_SET)
        self._users = 0

    def namespace(self, namespace: str) -> RedisStorage:
        self._users += 1
        return RedisStorage(self, namespace)

    async def release(self) -> None:
        self._users -= 1
        if self._users == 0:
            await self.client.aclose()


class RedisStorage:
    def __init__(self, backend: RedisBackend, namespace: str) -> None:
        self.namespace = namespace
        self._backend = backend
        self._client = backend.client
        self._prefix = f"{namespace}:"

    def _unavailable(self, exc: BaseException) -> StorageUnavailable:
        return StorageUnavailable(f"Redis {self.namespace}: {type(exc).__name__}: {exc}")

    async def set(self, key: str, value: bytes, *, overwrite: bool = True) -> bool:
        name = self._prefix + check_key(key)
        try:
            return bool(await self._client.set(name, value, nx=not overwrite))
        except _FAILURES as exc:
            raise self._unavailable(exc) from None

    async def get(self, key: str) -> bytes | None:
        try:
            value = await self._client.get(self._prefix + key)
        except _FAILURES as exc:
            raise self._unavailable(exc) from None
        return None if value is None else _bytes(value)

    async def replace(self, key: str, expected: bytes, value: bytes) -> bool:
        try:
            return bool(
                await self._backend.compare_and_set(keys=[self._prefix + key], args=[expected, value])
            )
        except _FAILURES as exc:
            raise self._unavailable(exc) from None

    async def delete(self, key: str) -> bytes | None:
        try:
            value = await self._client.getdel(self._prefix + key)
        except _FAILURES as exc:
            raise self._unavailable(exc) from None
        return None if value is None else _bytes(value)

    async def list(self) -> list[str]:
        try:
            names = [
                bytes(name) async for name in self._client.scan_iter(match=self._prefix + "*", count=1000)
            ]
        except _FAILURES as exc:
            raise self._unavailable(exc) from None
        return sorted(name.decode("utf-8", "replace")[len(self._prefix) :] for name in names)

    async def close(self) -> None:
        await self._backend.release()
