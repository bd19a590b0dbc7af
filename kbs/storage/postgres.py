"""`Postgres`: a table per namespace, `key TEXT PRIMARY KEY, value BYTEA` (upstream's schema), over
one asyncpg connection pool per URL.

Upstream's statements: an upsert (`ON CONFLICT (key) DO UPDATE`) and, without overwrite, `ON
CONFLICT DO NOTHING RETURNING`; `replace` is one conditional `UPDATE`, which PostgreSQL serialises
on the row, so exactly one of several replicas racing on a session wins. The URL is `POSTGRES_URL`
when set (as upstream), else built from `[storage_backend.backends.postgres]`. Connections broken by
a database restart are dropped by the pool and made again on the next request; until the database
answers, every call raises `StorageUnavailable`.

A connection goes back to the pool as it is: asyncpg's default resets the session on every release
(advisory locks, cursors, LISTEN, settings -- one more round trip per statement), and the statements
here change none of that.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import quote

import asyncpg

from kbs.storage.base import StorageError, StorageUnavailable, check_key

URL_ENV = "POSTGRES_URL"
DEFAULTS: Mapping[str, Any] = {"db": "postgres", "username": "postgres", "port": 5432, "host": "localhost"}
TIMEOUT_SECONDS = 5.0
POOL_SIZE = 8
_T = TypeVar("_T")
# InternalClientError: a server shutting down sends its idle connections FATAL 57P01 before it
# closes them; asyncpg takes that unsolicited message as a protocol error, and a statement sent in
# between fails with this (the connection is gone, as the others of the pool will be)
_FAILURES = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    OSError,
    TimeoutError,
)
# the server shut down or is starting: SQLSTATE classes 08 (connection) and 57 (operator intervention)
_SERVER_GONE = (asyncpg.PostgresConnectionError, asyncpg.exceptions.OperatorInterventionError)


def postgres_url(settings: Mapping[str, Any], environ: Mapping[str, str] = os.environ) -> str:
    """`POSTGRES_URL`, else `postgresql://user[:password]@host:port/db` from the settings."""
    if environ.get(URL_ENV):
        return environ[URL_ENV]
    merged = {**DEFAULTS, **settings}
    user = quote(str(merged["username"]), safe="")
    password = merged.get("password")
    auth = f"{user}:{quote(str(password), safe='')}" if password else user
    return f"postgresql://{auth}@{merged['host']}:{merged['port']}/{quote(str(merged['db']), safe='')}"


class PostgresBackend:
    """The pool every namespace of one database shares; made on first use, so a KBS started
    while the database is down serves 503s until it is up."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()
        self._tables: set[str] = set()
        self._users = 0

    async def _get_pool(self) -> asyncpg.Pool:
        async with self._opening:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self._url,
                    min_size=0,
                    max_size=POOL_SIZE,
                    timeout=TIMEOUT_SECONDS,
                    command_timeout=TIMEOUT_SECONDS,
                    max_inactive_connection_lifetime=60.0,
                    reset=_keep_session,
                )
            return self._pool

    async def run(self, table: str, call: Callable[[asyncpg.Connection], Awaitable[_T]]) -> _T:
        """`call` on a pooled connection, all of it (connecting, the statement, returning the
        connection) within a deadline. A failure other than the statement's own (a lost server)
        drops the whole pool: its connections are as dead as the one that failed, and returning
        one to the pool can wait on a socket that will never answer."""
        pool = None
        try:
            async with asyncio.timeout(2 * TIMEOUT_SECONDS):
                pool = await self._get_pool()
                async with pool.acquire() as connection:
                    if table not in self._tables:
                        await _create_table(connection, table)
                        self._tables.add(table)
                    return await call(connection)
        except _FAILURES as exc:
            lost = not isinstance(exc, asyncpg.PostgresError) or isinstance(exc, _SERVER_GONE)
            if lost and pool is not None and pool is self._pool:  # not a pool dropped already
                self._drop_pool()
            raise StorageUnavailable(f"Postgres {table}: {type(exc).__name__}: {exc}") from None

    def _drop_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.terminate()

    def namespace(self, namespace: str) -> PostgresStorage:
        self._users += 1
        return PostgresStorage(self, namespace)

    async def release(self) -> None:
        self._users -= 1
        if self._users == 0 and self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()


async def _keep_session(connection: asyncpg.Connection) -> None:
    """The pool's reset: nothing (see the module's docstring; asyncpg still rolls back an open
    transaction first)."""


async def _create_table(connection: asyncpg.Connection, table: str) -> None:
    """Upstream's table; replicas starting together race on the catalogue, and a loser's
    `IF NOT EXISTS` can still fail with a duplicate: the table then exists."""
    with contextlib.suppress(asyncpg.UniqueViolationError, asyncpg.DuplicateTableError):
        await connection.execute(
            _Statements(table)("CREATE TABLE IF NOT EXISTS {} (value BYTEA, key TEXT PRIMARY KEY)")
        )


class _Statements:
    """Statements on one namespace's table; the name is checked to be an identifier, and values
    are always parameters."""

    def __init__(self, table: str) -> None:
        if not (table.isidentifier() and table.isascii()):
            raise StorageError(f"namespace {table[:40]!r} cannot be a table name")
        self._table = table

    def __call__(self, template: str) -> str:
        return template.format(self._table)


class PostgresStorage:
    def __init__(self, backend: PostgresBackend, namespace: str) -> None:
        self.namespace = namespace
        self._backend = backend
        sql = _Statements(namespace)
        self._upsert = sql(
            "INSERT INTO {} (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = $2"
        )
        self._insert = sql(
            "INSERT INTO {} (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING RETURNING key"
        )
        self._select = sql("SELECT value FROM {} WHERE key = $1")
        self._update = sql("UPDATE {} SET value = $3 WHERE key = $1 AND value = $2 RETURNING key")
        self._delete = sql("DELETE FROM {} WHERE key = $1 RETURNING value")
        self._keys = sql("SELECT key FROM {} ORDER BY key")

    async def set(self, key: str, value: bytes, *, overwrite: bool = True) -> bool:
        check_key(key)
        if overwrite:
            await self._backend.run(self.namespace, lambda c: c.execute(self._upsert, key, value))
            return True
        inserted = await self._backend.run(self.namespace, lambda c: c.fetchval(self._insert, key, value))
        return inserted is not None

    async def get(self, key: str) -> bytes | None:
        value = await self._backend.run(self.namespace, lambda c: c.fetchval(self._select, key))
        return None if value is None else bytes(value)

    async def replace(self, key: str, expected: bytes, value: bytes) -> bool:
        done = await self._backend.run(
            self.namespace, lambda c: c.fetchval(self._update, key, expected, value)
        )
        return done is not None

    async def delete(self, key: str) -> bytes | None:
        value = await self._backend.run(self.namespace, lambda c: c.fetchval(self._delete, key))
        return None if value is None else bytes(value)

    async def list(self) -> list[str]:
        rows = await self._backend.run(self.namespace, lambda c: c.fetch(self._keys))
        return [str(row["key"]) for row in rows]

    async def close(self) -> None:
        await self._backend.release()
