"""Storage settings for each backend against the test servers, for tests run on every backend."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from kbs.storage import StorageSettings
from kbs.storage.factory import LOCAL_FS, LOCAL_JSON, MEMORY, POSTGRES, REDIS
from tests.kbs.dbservers import flushed, fresh_database

BACKENDS = (MEMORY, LOCAL_FS, LOCAL_JSON, POSTGRES, REDIS)
SHARED_BACKENDS = (LOCAL_FS, POSTGRES, REDIS)


def postgres_settings(url: str) -> dict[str, Any]:
    """`[storage_backend.backends.postgres]` (upstream's keys) for a test database's URL."""
    parts = urlsplit(url)
    return {
        "host": parts.hostname,
        "port": parts.port,
        "db": parts.path.lstrip("/"),
        "username": parts.username,
    }


def settings_for(request: pytest.FixtureRequest, kind: str, tmp_path: Path) -> StorageSettings:
    """`kind` for every namespace; the database servers start only for the tests that use them."""
    postgres = postgres_settings(request.getfixturevalue("postgres_url")) if kind == POSTGRES else {}
    redis = {"url": request.getfixturevalue("redis_url")} if kind == REDIS else {}
    return StorageSettings(
        type=kind,
        session_type=kind,
        local_fs=tmp_path / "local_fs",
        local_json=tmp_path / "local_json",
        postgres=postgres,
        redis=redis,
    )


def _section(kind: str, backend: str, settings: dict[str, Any]) -> str:
    lines = "".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items())
    return f'[storage_backend]\nstorage_type = "{kind}"\n[storage_backend.backends.{backend}]\n{lines}'


def storage_section(kind: str, directory: Path, url: str = "") -> str:
    """`[storage_backend]` for `kind` with upstream's keys; `url` is the test server's."""
    if kind == LOCAL_FS:
        return _section(kind, "local_fs", {"dir_path": str(directory)})
    if kind == POSTGRES:
        return _section(kind, "postgres", postgres_settings(url))
    assert kind == REDIS
    return _section(kind, "redis", {"url": url})


def fresh_section(request: pytest.FixtureRequest, kind: str, directory: Path) -> str:
    """`[storage_backend]` for `kind` on empty storage: a new database on the session's PostgreSQL
    server, the session's Redis server flushed, or `directory` for LocalFs. Usable from a fixture of
    any scope (the servers are session-scoped)."""
    if kind == POSTGRES:
        return storage_section(kind, directory, fresh_database(request.getfixturevalue("postgres_server")))
    if kind == REDIS:
        return storage_section(kind, directory, flushed(request.getfixturevalue("redis_server")))
    return storage_section(kind, directory)
