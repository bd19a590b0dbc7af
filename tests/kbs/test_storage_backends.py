"""Every storage backend keeps upstream's semantics, against real PostgreSQL and Redis servers."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kbs.storage import SESSIONS, KeyValueStorage, StorageError, StorageFactory, StorageUnavailable
from kbs.storage.factory import LOCAL_FS, MEMORY, POSTGRES, REDIS, StorageSettings
from kbs.storage.postgres import postgres_url
from kbs.storage.redis import redis_url
from tests.kbs.dbservers import Postgres, Redis, free_port
from tests.kbs.storage_backends import BACKENDS, SHARED_BACKENDS, settings_for
from tests.relaying import pipe


@pytest.fixture(params=BACKENDS)
async def settings(request: pytest.FixtureRequest, tmp_path: Path) -> StorageSettings:
    return settings_for(request, request.param, tmp_path)


@pytest.fixture
async def storage(settings: StorageSettings) -> AsyncIterator[KeyValueStorage]:
    store = StorageFactory(settings).open("repository")
    try:
        yield store
    finally:
        await store.close()


async def test_set_get_list_delete(storage: KeyValueStorage) -> None:
    value = bytes(range(256))
    assert await storage.get("default/key/one") is None
    assert await storage.set("default/key/one", value) is True
    assert await storage.set("b.2", b"") is True
    assert await storage.get("default/key/one") == value
    assert await storage.get("b.2") == b""
    assert await storage.list() == ["b.2", "default/key/one"]
    assert await storage.delete("default/key/one") == value
    assert await storage.delete("default/key/one") is None
    assert await storage.list() == ["b.2"]


async def test_no_overwrite_keeps_the_first_value(storage: KeyValueStorage) -> None:
    assert await storage.set("k", b"first", overwrite=False) is True
    assert await storage.set("k", b"second", overwrite=False) is False
    assert await storage.get("k") == b"first"
    assert await storage.set("k", b"third") is True
    assert await storage.get("k") == b"third"


async def test_replace_is_compare_and_set(storage: KeyValueStorage) -> None:
    assert await storage.replace("k", b"a", b"b") is False  # missing key
    await storage.set("k", b"a")
    assert await storage.replace("k", b"x", b"b") is False
    assert await storage.get("k") == b"a"
    assert await storage.replace("k", b"a", b"b") is True
    assert await storage.get("k") == b"b"


@pytest.mark.parametrize("key", ["", "a b", "../x", "a//b", "x/..", "é", "k;DROP", "a\nb", "k" * 1025])
async def test_bad_keys_are_refused(storage: KeyValueStorage, key: str) -> None:
    with pytest.raises(StorageError):
        await storage.set(key, b"v")


@pytest.mark.parametrize("kind", SHARED_BACKENDS)
async def test_one_replica_wins_a_race(request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> None:
    """Three replicas (their own connections) race 60 compare-and-sets from one value: one wins."""
    settings = settings_for(request, kind, tmp_path)
    replicas = [StorageFactory(settings).open(SESSIONS) for _ in range(3)]
    try:
        await replicas[0].set("s", b"authed")
        results = await asyncio.gather(
            *(replicas[i % 3].replace("s", b"authed", f"attested {i}".encode()) for i in range(60))
        )
        assert results.count(True) == 1
        winner = results.index(True)
        assert await replicas[1].get("s") == f"attested {winner}".encode()
        creations = await asyncio.gather(
            *(r.set("new", str(i).encode(), overwrite=False) for i, r in enumerate(replicas))
        )
        assert creations.count(True) == 1
    finally:
        for replica in replicas:
            await replica.close()


async def test_postgres_layout_is_upstreams(
    postgres_server: Postgres, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    settings = settings_for(request, POSTGRES, tmp_path)
    store = StorageFactory(settings).open("repository")
    try:
        await store.set("default/a/b", b"\x00\xff")
    finally:
        await store.close()
    database = request.getfixturevalue("postgres_url").rsplit("/", 1)[1]
    columns = postgres_server.psql(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'repository'"
        " ORDER BY column_name",
        database,
    )
    assert columns.split() == ["key|text", "value|bytea"]
    assert (
        postgres_server.psql("SELECT key, encode(value, 'hex') FROM repository", database).strip()
        == "default/a/b|00ff"
    )


async def test_a_postgres_statement_is_one_round_trip(
    postgres_server: Postgres, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A connection goes back to the pool without asyncpg's session reset (a second statement per
    call): the last statement the KBS's connection ran is its own SELECT."""
    settings = settings_for(request, POSTGRES, tmp_path)
    store = StorageFactory(settings).open("kbs")
    try:
        await store.set("k", b"v")
        assert await store.get("k") == b"v"
        database = request.getfixturevalue("postgres_url").rsplit("/", 1)[1]
        last = postgres_server.psql(
            "SELECT query FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
            database,
        )
    finally:
        await store.close()
    assert last.strip() == "SELECT value FROM kbs WHERE key = $1"


async def test_redis_layout_is_upstreams(
    redis_server: Redis, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    store = StorageFactory(settings_for(request, REDIS, tmp_path)).open("kbs")
    try:
        await store.set("resource-policy", b"package policy")
    finally:
        await store.close()
    cli = ["redis-cli", "-h", "127.0.0.1", "-p", str(redis_server.port)]
    assert (
        subprocess.run(
            [*cli, "GET", "kbs:resource-policy"], capture_output=True, text=True, check=True
        ).stdout.strip()
        == "package policy"
    )


async def test_localfs_layout_is_upstreams(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    store = StorageFactory(settings_for(request, LOCAL_FS, tmp_path)).open("repository")
    await store.set("default/foo/bar", b"secret")
    assert (tmp_path / "local_fs" / "repository" / "default\\x2Ffoo\\x2Fbar").read_bytes() == b"secret"
    (tmp_path / "local_fs" / "repository" / "default\\x2Fop\\x2Fkey").write_bytes(b"from the operator")
    assert await store.get("default/op/key") == b"from the operator"
    await store.close()


def test_urls_from_the_environment_override_the_file() -> None:
    settings = {"host": "db", "port": 6432, "db": "trustee", "username": "kbs", "password": "p@ss/word"}
    assert postgres_url(settings, {}) == "postgresql://kbs:p%40ss%2Fword@db:6432/trustee"
    assert postgres_url({}, {}) == "postgresql://postgres@localhost:5432/postgres"
    assert postgres_url(settings, {"POSTGRES_URL": "postgresql://x@y/z"}) == "postgresql://x@y/z"
    assert redis_url({}, {}) == "redis://127.0.0.1:6379"
    assert redis_url({"url": "redis://a:1"}, {"REDIS_URL": "redis://b:2"}) == "redis://b:2"


@pytest.mark.parametrize("kind", [POSTGRES, REDIS])
async def test_an_unreachable_server_is_unavailable(kind: str, tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    settings = StorageSettings(
        type=kind,
        session_type=kind,
        postgres={"host": "127.0.0.1", "port": port},
        redis={"url": f"redis://127.0.0.1:{port}"},
    )
    store = StorageFactory(settings).open("kbs")
    try:
        with pytest.raises(StorageUnavailable):
            await store.get("resource-policy")
        with pytest.raises(StorageUnavailable):
            await store.set("resource-policy", b"x")
    finally:
        await store.close()


async def test_memory_is_not_shared() -> None:
    assert not StorageSettings(type=MEMORY, session_type=MEMORY).shared
    assert StorageSettings(type=REDIS, session_type=POSTGRES).shared


class _LingeringRelay:
    """A TCP relay to PostgreSQL that passes on everything but holds back the server's close until
    `let_close` is set: the moment between a shut-down server's FATAL message and its EOF, which a
    busy KBS can hit by chance, made to last."""

    def __init__(self, host: str, port: int) -> None:
        self._upstream = (host, port)
        self.let_close = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> int:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def __aexit__(self, *_: object) -> None:
        self.let_close.set()
        assert self._server is not None
        self._server.close()
        for pump in self._pumps:
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)

    async def _relay(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        server_in, server_out = await asyncio.open_connection(*self._upstream)
        self._pumps.add(asyncio.create_task(pipe(client_in, server_out)))
        self._pumps.add(asyncio.create_task(pipe(server_in, client_out, close_after=self.let_close)))


async def test_a_connection_the_server_terminated_is_unavailable_not_a_fault(
    postgres_server: Postgres, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A server shutting down sends its idle connections FATAL 57P01, then closes them. A statement
    sent on such a connection in between finds asyncpg's protocol in an error state
    (`InternalClientError`): that is the database going away (503), not a fault of the KBS (500), and
    the next call gets a fresh connection."""
    settings = settings_for(request, POSTGRES, tmp_path)
    relay = _LingeringRelay(settings.postgres["host"], settings.postgres["port"])
    async with relay as port:
        relayed = dataclasses.replace(settings, postgres={**settings.postgres, "port": port})
        store = StorageFactory(relayed).open("kbs")
        try:
            await store.set("k", b"v")
            database = settings.postgres["db"]
            postgres_server.psql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
                database,
            )
            await asyncio.sleep(0.2)  # the FATAL message reaches the client; its close is held
            with pytest.raises(StorageUnavailable, match="InternalClientError"):
                await store.get("k")
            relay.let_close.set()
            assert await store.get("k") == b"v"
        finally:
            await store.close()
