"""`kbs` processes sharing one storage backend, for the scale-out tests and the benchmark."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from tests.kbs.dbservers import free_port
from tests.kbs.storage_backends import storage_section
from tests.kbs.support import AdminKey, config_text

KBS = Path(sys.executable).with_name("kbs")


def replica_config(
    kind: str, directory: Path, admin: AdminKey, port: int, url: str = "", as_addr: str = ""
) -> str:
    """A replica's configuration; `as_addr` names a shared attestation service (`coco_as_grpc`)."""
    local = directory / "storage"
    text = config_text(
        local, admin.path, sockets=f"127.0.0.1:{port}", backend=storage_section(kind, local, url)
    )
    if as_addr:
        text = text.replace('type = "coco_as_builtin"', f'type = "coco_as_grpc"\nas_addr = "{as_addr}"')
    return text


async def wait_healthy(url: str, process: subprocess.Popen[bytes]) -> None:
    """Until `/healthz` answers (polling a process coming up)."""
    async with aiohttp.ClientSession() as http:
        for _ in range(600):
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            try:
                async with http.get(f"{url}/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"{url} did not come up")


@dataclass
class Replicas:
    """`count` `kbs` processes on one storage; `urls[i]` serves replica i."""

    kind: str
    directory: Path
    admin: AdminKey
    url: str = ""
    as_addr: str = ""
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)

    async def start(self, count: int) -> None:
        if not KBS.exists():
            pytest.skip(f"the kbs command is not installed beside {sys.executable} (run scripts/bootstrap)")
        for index in range(count):
            port = free_port()
            config = self.directory / f"kbs-{index}.toml"
            config.write_text(
                replica_config(self.kind, self.directory, self.admin, port, self.url, self.as_addr)
            )
            # a file, not a pipe: a storm of logged refusals would fill a pipe nobody drains and
            # block the replica
            with (self.directory / f"kbs-{index}.log").open("ab") as log:
                process = subprocess.Popen([str(KBS), "--config-file", str(config)], stderr=log)
            self.processes.append(process)
            self.urls.append(f"http://127.0.0.1:{port}")
        for url, process in zip(self.urls, self.processes, strict=True):
            await wait_healthy(url, process)

    def kill(self, index: int) -> None:
        self.processes[index].kill()
        self.processes[index].wait(30)

    def stop(self) -> str:
        """Stop every replica; their standard error, for a test to check."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        logs = (self.directory / f"kbs-{index}.log" for index in range(len(self.processes)))
        return "".join(log.read_text(errors="replace") for log in logs)
