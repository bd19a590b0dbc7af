"""One moto server (own process) for the small tests here; the chaos test starts a fresh one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.chaos.moto_server import moto_server


@pytest.fixture(scope="session")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as url:
        yield url
