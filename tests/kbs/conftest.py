"""Fixtures shared by the KBS tests: the real database servers (`tests.kbs.dbservers`), and the
storage backend a test's KBS runs on, for the tests that must hold on every shared backend."""

from pathlib import Path

import pytest

from tests.kbs.dbservers import postgres_server, postgres_url, redis_server, redis_url
from tests.kbs.storage_backends import SHARED_BACKENDS, fresh_section

__all__ = ["backend", "module_backend", "postgres_server", "postgres_url", "redis_server", "redis_url"]


@pytest.fixture(params=SHARED_BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """`[storage_backend]` of empty storage for one test, once per shared backend (LocalFs,
    Postgres, Redis): pass it to `start_kbs(..., backend=...)`."""
    return fresh_section(request, request.param, tmp_path / "storage")


@pytest.fixture(scope="module", params=SHARED_BACKENDS)
def module_backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """As `backend`, for a KBS that serves a whole module."""
    return fresh_section(request, request.param, tmp_path_factory.mktemp("storage"))
