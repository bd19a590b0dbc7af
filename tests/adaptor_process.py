"""`cloud-api-adaptor <provider>` as a node runs it, for the tests and benches that need a real one.

Its files (hypervisor socket, pods, state, log) live under `directory`; `env` is its whole
environment, so a test decides exactly which provider settings it sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from protocols.ttrpc.client import Client
from shimdriver.driver import HypervisorClient


@dataclass
class AdaptorProcess:
    directory: Path
    env: Mapping[str, str]
    provider: str = "aws"
    args: tuple[str, ...] = ()
    process: asyncio.subprocess.Process | None = None
    netns: str = ""  # run inside this network namespace (as a worker node with its own network)

    @property
    def socket(self) -> Path:
        return self.directory / "hypervisor.sock"

    @property
    def state_dir(self) -> Path:
        return self.directory / "state"

    @property
    def log(self) -> Path:
        return self.directory / "adaptor.log"

    @property
    def hypervisor(self) -> HypervisorClient:
        return HypervisorClient(self.socket)

    async def start(self, timeout_s: float = 60.0) -> None:
        """Start it and wait until it serves, i.e. after its start-up reconciliation."""
        await self.spawn()
        await self.serving(timeout_s)

    async def spawn(self) -> None:
        """Start it without waiting: it validates its settings, then reconciles, then serves."""
        binary = Path(sys.executable).with_name("cloud-api-adaptor")
        inside = ("ip", "netns", "exec", self.netns) if self.netns else ()
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                *inside, str(binary), self.provider,
                "--socket", str(self.socket), "--pods-dir", str(self.directory / "pods"),
                # No HTTP endpoints unless `args` ask for them (--probe-port): tests run many at once.
                "--state-dir", str(self.state_dir), "--probe-port", "0", *self.args,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=log,
                env=dict(self.env),
            )  # fmt: skip

    async def serving(self, timeout_s: float) -> None:
        assert self.process is not None
        async with asyncio.timeout(timeout_s):
            while True:
                if self.process.returncode is not None:
                    raise AssertionError(
                        f"adaptor exited with {self.process.returncode}:\n{self.log.read_text()[-4000:]}"
                    )
                with contextlib.suppress(OSError):
                    client = await Client.connect_unix(self.socket)
                    await client.close()
                    return
                await asyncio.sleep(0.05)

    async def kill(self) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                await self.kill()
