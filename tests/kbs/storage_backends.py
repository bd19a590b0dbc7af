"""Storage settings for each backend against the test servers, for tests run on every backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from kbs.storage import StorageSettings
from kbs.storage.factory import LOCAL_FS, LOCAL_JSON, MEMORY, POSTGRES, REDIS

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
