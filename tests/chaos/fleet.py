"""Fake pod VMs for the instances a cloud launches, each booting from its own user data.

A real pod VM gets its forwarder's TLS identity from the cloud-config user data the adaptor sent with
RunInstances (apf.json: a server certificate for the instance name issued by the adaptor's CA, its key,
and the adaptor's client certificate to trust). These fakes do the same: told of a launch by the
cloud (tests/fakes/ec2_front.py), a VM waits its boot delay, reads apf.json from that user data and
starts agent-protocol-forwarder on the instance's own private address (inside 127.0.0.0/8) and the
adaptor's forwarder port; termination stops it. Every forwarder relays to one shared stand-in agent:
the tests ask each pod VM for its Health service, not for containers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from podvm.forwarder.service import start_forwarder
from podvm.standin_agent.agent import StandinAgent
from protocols.apf import ForwarderConfig, ForwarderConfigError
from protocols.cloudconfig import APF_CONFIG_PATH, CloudConfigError, parse_cloud_config
from protocols.ttrpc.relay import Upstream
from protocols.ttrpc.server import Server
from protocols.tunnel_tls import TunnelTLSError, server_context
from tests.fakes.ec2_front import Launch

log = logging.getLogger(__name__)


class BootError(ValueError):
    """A pod VM could not boot from its user data."""


def forwarder_config(user_data: bytes) -> ForwarderConfig:
    """apf.json from a pod VM's cloud-config user data, as process-user-data would write it."""
    try:
        files = parse_cloud_config(user_data)
        apf = next((f.content for f in files if f.path == APF_CONFIG_PATH), None)
        if apf is None:
            raise BootError(f"user data has no {APF_CONFIG_PATH}")
        return ForwarderConfig.from_json(apf)
    except (CloudConfigError, ForwarderConfigError) as exc:
        raise BootError(str(exc)) from None


@dataclass
class _VM:
    server: Server
    upstream: Upstream


def no_delay() -> float:
    return 0.0


class PodVMFleet:
    """The pod VMs of one cloud: an `ec2_front.Observer`. `errors` lists VMs that failed to boot."""

    def __init__(self, directory: Path, port: int, boot_delay: Callable[[], float] = no_delay) -> None:
        self.directory = directory
        self.port = port
        self.boot_delay = boot_delay
        self.errors: list[str] = []
        self.booted = 0
        self._agent = StandinAgent(directory / "agent-root")
        self._agent_server = Server(self._agent.services())
        self._vms: dict[str, _VM] = {}
        self._booting: dict[str, asyncio.Task[None]] = {}
        self._gone: set[str] = set()

    @property
    def agent_socket(self) -> Path:
        return self.directory / "agent.sock"

    @property
    def running(self) -> set[str]:
        return set(self._vms)

    async def start(self) -> None:
        await self._agent_server.listen_unix(self.agent_socket)

    async def settled(self) -> None:
        """Wait until every VM launched so far has booted (or failed to)."""
        await asyncio.gather(*self._booting.values(), return_exceptions=True)

    def launched(self, launch: Launch) -> None:
        """Boot a VM for a new instance (a replayed launch of a known one changes nothing)."""
        if launch.instance_id in self._gone or launch.instance_id in self._booting:
            return
        task = asyncio.get_running_loop().create_task(self._boot(launch))
        self._booting[launch.instance_id] = task

    def terminated(self, instance_id: str) -> None:
        self._gone.add(instance_id)
        task = self._booting.pop(instance_id, None)
        if task is not None:
            task.cancel()
        vm = self._vms.pop(instance_id, None)
        if vm is not None:
            asyncio.get_running_loop().create_task(self._halt(vm))

    async def _boot(self, launch: Launch) -> None:
        await asyncio.sleep(self.boot_delay())
        try:
            config = forwarder_config(launch.user_data)
            tls = server_context(
                config.tls_server_cert, config.tls_server_key, config.tls_client_ca, config.tls_min_version
            )
            server, upstream, _ = await start_forwarder(
                launch.private_ip, self.port, self.agent_socket, tls, pod_namespace=config.pod_namespace
            )
        except (BootError, TunnelTLSError, OSError) as exc:
            self.errors.append(f"{launch.instance_id} ({launch.name}): {exc}")
            log.error("pod VM %s failed to boot: %s", launch.instance_id, exc)
            return
        self._vms[launch.instance_id] = _VM(server, upstream)
        self.booted += 1

    @staticmethod
    async def _halt(vm: _VM) -> None:
        await vm.server.close()
        await vm.upstream.close()

    async def close(self) -> None:
        for task in self._booting.values():
            task.cancel()
        for task in self._booting.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for vm in self._vms.values():
            await self._halt(vm)
        self._vms.clear()
        self._agent.shutdown.set()
        await self._agent_server.close()
