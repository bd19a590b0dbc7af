"""Real PostgreSQL and Redis servers from the Debian packages, on loopback in a scratch directory.

`scripts/bootstrap` installs `postgresql` and `redis-server`; without them the tests that need a
server skip. PostgreSQL refuses to run as root, so as root (CI) the cluster belongs to the
`postgres` user the package creates and its commands run through `runuser`. Each server listens on
a free loopback port only (no Unix socket outside its directory) and trusts local connections.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)
REDIS_SERVER = shutil.which("redis-server")
START_SECONDS = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_owner(command: list[str], user: str | None) -> list[str]:
    return ["runuser", "-u", user, "--", *command] if user else command


def _ready(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


class Postgres:
    """A cluster of its own; `stop()` and `start()` restart it on the same port and data."""

    def __init__(self, directory: Path) -> None:
        if PG_BIN is None:
            pytest.skip("PostgreSQL is not installed (scripts/bootstrap installs it)")
        self.bin = PG_BIN
        self.data = directory / "data"
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user:
            shutil.chown(directory, self.user)
        subprocess.run(
            _as_owner(
                [
                    str(self.bin / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                ],
                self.user,
            ),
            check=True,
            capture_output=True,
        )

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def database_url(self, name: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def _ctl(self, *args: str) -> None:
        command = [str(self.bin / "pg_ctl"), "-D", str(self.data), "-s", *args]
        subprocess.run(_as_owner(command, self.user), check=True, capture_output=True)

    def start(self) -> None:
        options = f"-h 127.0.0.1 -p {self.port} -k {self.data} -c fsync=off -c max_connections=200"
        self._ctl(
            "-w", "-t", str(int(START_SECONDS)), "-l", str(self.data / "server.log"), "-o", options, "start"
        )

    def stop(self) -> None:
        self._ctl("-w", "-m", "fast", "stop")

    def psql(self, sql: str, database: str = "postgres") -> str:
        command = [str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]
        result = subprocess.run(
            [*command, "-d", database, "-qAt", "-v", "ON_ERROR_STOP=1", "-c", sql],
            check=True,
            capture_output=True,
            text=True,
        )
        return result.stdout


class Redis:
    def __init__(self, directory: Path) -> None:
        if REDIS_SERVER is None:
            pytest.skip("redis-server is not installed (scripts/bootstrap installs it)")
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS_SERVER is not None
        command = [
            REDIS_SERVER,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.directory),
        ]
        command += ["--save", "", "--appendonly", "no", "--protected-mode", "yes", "--daemonize", "no"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_SECONDS
        while not _ready(self.port):  # polling a process coming up, not synchronising tests
            assert self.process.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not come up"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
            self.process = None


@contextlib.contextmanager
def _scratch(prefix: str) -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Postgres]:
    with _scratch("kbs-pg-") as directory:
        server = Postgres(directory)
        server.start()
        try:
            yield server
        finally:
            with contextlib.suppress(subprocess.CalledProcessError):
                server.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Redis]:
    with _scratch("kbs-redis-") as directory:
        server = Redis(directory)
        server.start()
        try:
            yield server
        finally:
            server.stop()


_databases = iter(range(1, 1_000_000))


def fresh_database(server: Postgres) -> str:
    """The URL of a new, empty database on `server` (about 50 ms: no second server per test)."""
    name = f"test_{next(_databases)}"
    server.psql(f"CREATE DATABASE {name}")
    return server.database_url(name)


def flushed(server: Redis) -> str:
    """The URL of `server`'s database, emptied (tests run one at a time)."""
    subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(server.port), "FLUSHALL"], check=True, capture_output=True
    )
    return server.url


@pytest.fixture
def postgres_url(postgres_server: Postgres) -> str:
    """A fresh, empty database for one test."""
    return fresh_database(postgres_server)


@pytest.fixture
def redis_url(redis_server: Redis) -> str:
    """An emptied database for one test."""
    return flushed(redis_server)
