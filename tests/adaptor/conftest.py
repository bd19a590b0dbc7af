"""Adaptors for the tests: a real `cloud-api-adaptor local` process, or an in-process one on a fake cloud."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from adaptor.config import SETTINGS, AdaptorConfig
from adaptor.hypervisor import hypervisor_services
from adaptor.sandbox import SandboxManager
from adaptor.state import StateStore
from adaptor.tunnel.authority import TunnelAuthority
from protocols.ttrpc.server import Server
from providers.settings import resolve
from shimdriver.driver import HypervisorClient
from tests.adaptor.fake_cloud import MemoryCloud
from tests.adaptor_process import AdaptorProcess


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short scratch path: unix socket paths must stay under 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="pp-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class LocalAdaptor(AdaptorProcess):
    """`cloud-api-adaptor local`, its pod VMs (process trees) under `directory/vms`."""

    def __init__(self, directory: Path) -> None:
        super().__init__(
            directory,
            dict(os.environ),
            "local",
            ("--local-dir", str(directory / "vms"), "--local-network", "loopback"),
        )

    @property
    def vms(self) -> Path:
        return self.directory / "vms"

    def local_vms(self) -> list[str]:
        return sorted(p.name for p in self.vms.glob("*")) if self.vms.exists() else []


async def _kill_local_vms(vms: Path) -> None:
    for pid_file in vms.glob("*/pid"):
        with contextlib.suppress(ProcessLookupError, ValueError, PermissionError):
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)


@pytest.fixture
async def adaptor(short_dir: Path) -> AsyncIterator[LocalAdaptor]:
    process = LocalAdaptor(short_dir)
    await process.start()
    yield process
    await process.stop()
    await _kill_local_vms(process.vms)


@dataclass
class InProcessAdaptor:
    socket: Path
    cloud: MemoryCloud
    manager: SandboxManager
    store: StateStore

    @property
    def hypervisor(self) -> HypervisorClient:
        return HypervisorClient(self.socket)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
async def memory_adaptor(short_dir: Path) -> AsyncIterator[InProcessAdaptor]:
    values = resolve(SETTINGS, None, {})
    values.update(state_dir=str(short_dir / "state"), pods_dir=str(short_dir / "pods"), proxy_timeout="1s")
    config = AdaptorConfig.from_values(values)
    cloud = MemoryCloud(port=free_port())
    store = StateStore(config.state_dir / "sandboxes.db")
    manager = SandboxManager(config, cloud, store, TunnelAuthority.load_or_create(config.state_dir / "tls"))
    server = Server(hypervisor_services(manager))
    await server.listen_unix(short_dir / "hypervisor.sock")
    yield InProcessAdaptor(short_dir / "hypervisor.sock", cloud, manager, store)
    await server.close()
    await manager.close()
    store.close()
