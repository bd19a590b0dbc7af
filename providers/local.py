"""The `local` provider: each "pod VM" is a local process tree, so the whole flow runs with no cloud.

An instance is a directory holding its NoCloud user data and a small boot script that does what a
pod VM's systemd does: process-user-data, then the agent, then agent-protocol-forwarder on
<its address>:15150. As root, each instance gets network namespaces of its own (its "VM host" on a
bridge, and its podns: providers/local_network.py), so the pod network tunnel runs as with a cloud
VM; otherwise it listens on a loopback address of its own and has no pod network. The agent is the
project's STAND-IN (podvm/standin_agent), not kata-agent. Instances live in their own sessions, so
they outlive an adaptor restart as VMs do.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import random
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from protocols.podnet.netlink import NETNS_DIR, NetnsError, enter_namespace
from providers.base import CreateRequest, Instance, InstanceNotFound, Provider, ProviderError
from providers.local_network import BRIDGE, DEFAULT_SUBNET, LocalNetwork, unavailable_reason
from providers.settings import ConfigError, Setting, SettingValue

log = logging.getLogger(__name__)

FORWARDER_PORT = 15150
STOP_GRACE_S = 3.0
# Kata guests receive CopyFile into tmpfs; so does the stand-in when the host has one.
MEMORY_FS = Path("/dev/shm")


def _bin(name: str) -> str:
    """A console script of this installation (beside the running interpreter)."""
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


BOOT_SCRIPT = """#!/bin/sh
# Boot of a local pod VM: what systemd does in a real image, in the same order.
set -e
echo $$ > "$DIR/pid"
exec >>"$DIR/console.log" 2>&1
{user_data} provision-files --source nocloud --cidata-dir "$DIR/cidata" --root "$DIR/root" -t 30
{agent} --socket "$DIR/agent.sock" --root "$AGENT_ROOT" &
exec {forwarder} -config "$DIR/root/run/peerpod/apf.json" -listen "$IP:{port}" \\
    -kata-agent-socket "$DIR/agent.sock" -pod-namespace "$PODNS"
"""


@dataclass(frozen=True)
class LocalInstance:
    id: str
    name: str
    sandbox_id: str
    owner: str
    ip: str

    def to_instance(self) -> Instance:
        return Instance(self.id, self.name, (ipaddress.ip_address(self.ip),), self.sandbox_id, FORWARDER_PORT)


class LocalProvider:
    name = "local"

    def __init__(self, directory: Path, owner: str, network: LocalNetwork | None = None) -> None:
        self.directory = directory
        self.owner = owner
        self.network = network
        self._children: dict[str, asyncio.subprocess.Process] = {}

    async def validate(self) -> None:
        """The pod VM commands must be installed beside this one, and the directory writable."""
        problems = [
            f"{name} is not installed (looked beside cloud-api-adaptor and in PATH)"
            for name in ("process-user-data", "peerpods-standin-agent", "agent-protocol-forwarder")
            if shutil.which(_bin(name)) is None
        ]
        if not os.access(self.directory, os.W_OK | os.X_OK):
            problems.append(f"-local-dir (LOCAL_PODVM_DIR) {self.directory} is not writable")
        if problems:
            raise ConfigError(problems)
        if self.network is None:
            log.info("local pod VMs on loopback addresses, without a pod network")
        else:
            await asyncio.to_thread(self.network.ensure_bridge)
            log.info("local pod VMs in network namespaces on bridge %s (%s)", BRIDGE, self.network.subnet)

    async def create_instance(self, request: CreateRequest) -> Instance:
        for existing in self._instances():
            if existing.name == request.name and existing.sandbox_id == request.sandbox_id:
                return existing.to_instance()
        instance_id = "local-" + secrets.token_hex(4)
        if self.network is None:
            address = self._free_address()
        else:
            address = str(await asyncio.to_thread(self.network.claim_address, instance_id))
        instance = LocalInstance(
            id=instance_id,
            name=request.name,
            sandbox_id=request.sandbox_id,
            owner=self.owner,
            ip=address,
        )
        vm_namespace = podns = ""
        if self.network is not None:
            try:
                await asyncio.to_thread(self.network.create_vm, instance.id, ipaddress.IPv4Address(address))
            except NetnsError as exc:
                await asyncio.to_thread(self.network.delete_vm, instance.id, address)
                raise ProviderError(str(exc)) from None
            vm_namespace = str(NETNS_DIR / self.network.vm_namespace(instance.id))
            podns = str(NETNS_DIR / self.network.podns(instance.id))
        directory = self.directory / instance.id
        (directory / "cidata").mkdir(parents=True, mode=0o700)
        (directory / "cidata" / "user-data").write_bytes(request.user_data)
        (directory / "cidata" / "meta-data").write_text(f"local-hostname: {request.name}\n")
        (directory / "instance.json").write_text(json.dumps(instance.__dict__))
        script = BOOT_SCRIPT.format(
            user_data=shlex.quote(_bin("process-user-data")),
            agent=shlex.quote(_bin("peerpods-standin-agent")),
            forwarder=shlex.quote(_bin("agent-protocol-forwarder")),
            port=FORWARDER_PORT,
        )
        (directory / "boot.sh").write_text(script)
        try:
            # Kept so the event loop reaps it; a restarted adaptor finds it by its pid file instead.
            self._children[instance.id] = await asyncio.create_subprocess_exec(
                "/bin/sh",
                str(directory / "boot.sh"),
                env={
                    **os.environ,
                    "DIR": str(directory),
                    "IP": instance.ip,
                    "AGENT_ROOT": str(self._agent_root(instance.id)),
                    "PODNS": podns,
                },
                preexec_fn=partial(enter_namespace, vm_namespace) if vm_namespace else None,
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        except OSError as exc:
            shutil.rmtree(directory, ignore_errors=True)
            if self.network is not None:
                await asyncio.to_thread(self.network.delete_vm, instance.id, instance.ip)
            raise ProviderError(f"cannot boot local pod VM: {exc}") from None
        return instance.to_instance()

    async def delete_instance(self, instance_id: str) -> None:
        directory = self.directory / instance_id
        if not (directory / "instance.json").exists() or "/" in instance_id:
            raise InstanceNotFound(f"local instance {instance_id} not found")
        address = str(json.loads((directory / "instance.json").read_text()).get("ip", ""))
        pid_file = directory / "pid"
        if pid_file.exists():
            await _stop_session(int(pid_file.read_text().strip() or 0))
        child = self._children.pop(instance_id, None)
        if child is not None:
            await child.wait()
        if self.network is not None:
            await asyncio.to_thread(self.network.delete_vm, instance_id, address)
        shutil.rmtree(self._agent_root(instance_id), ignore_errors=True)
        shutil.rmtree(directory, ignore_errors=True)

    async def list_instances(self) -> list[Instance]:
        return [instance.to_instance() for instance in self._instances()]

    async def teardown(self) -> None:
        """Nothing to release: instances are independent processes."""

    def _agent_root(self, instance_id: str) -> Path:
        if MEMORY_FS.is_dir():
            return MEMORY_FS / f"peerpods-{self.owner}-{instance_id}"
        return self.directory / instance_id / "agent"

    def _instances(self) -> list[LocalInstance]:
        found = []
        for path in sorted(self.directory.glob("*/instance.json")):
            with contextlib.suppress(OSError, ValueError, TypeError):
                instance = LocalInstance(**json.loads(path.read_text()))
                if instance.owner == self.owner:
                    found.append(instance)
        return found

    def _free_address(self) -> str:
        """A loopback address of its own, so every local pod VM listens on the usual port."""
        used = {instance.ip for instance in self._instances()}
        rng = random.SystemRandom()
        for _ in range(100):
            address = f"127.{rng.randint(64, 127)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
            if address in used:
                continue
            with socket.socket() as probe:
                try:
                    probe.bind((address, FORWARDER_PORT))
                except OSError:
                    continue
            return address
        raise ProviderError("no free loopback address for a local pod VM")


async def _stop_session(pid: int) -> None:
    """SIGTERM the pod VM's whole process group, then SIGKILL what is left after a grace period."""
    if pid <= 1:
        return
    for signum in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, signum)
        except (ProcessLookupError, PermissionError):
            return
        for _ in range(int(STOP_GRACE_S / 0.02)):
            await asyncio.sleep(0.02)
            if not _group_alive(pid):
                return


def _group_alive(pgid: int) -> bool:
    """Whether any non-zombie process is left in the group (orphaned zombies wait for init to reap)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


class LocalPlugin:
    name = "local"
    settings: Sequence[Setting] = [
        Setting("local-dir", "LOCAL_PODVM_DIR", default="/run/peerpod/local-vms",
                help="where local pod VMs keep their files (short path: unix sockets live there)"),
        Setting("local-network", "LOCAL_PODVM_NETWORK", default="auto",
                help="netns: each pod VM in network namespaces on a bridge, with the pod network "
                     "(needs root); loopback: loopback addresses, no pod network; auto: netns as root"),
        Setting("local-subnet", "LOCAL_PODVM_SUBNET", default=DEFAULT_SUBNET,
                help="IPv4 subnet of the local pod VMs' bridge (netns mode)"),
    ]  # fmt: skip

    def create(self, config: Mapping[str, SettingValue | None], owner: str) -> Provider:
        directory = Path(str(config["local_dir"]))
        mode = str(config["local_network"])
        problems = []
        if mode not in ("auto", "netns", "loopback"):
            problems.append(f"LOCAL_PODVM_NETWORK: {mode!r} is not auto, netns or loopback")
        if mode == "netns" and (why := unavailable_reason()):
            problems.append(f"LOCAL_PODVM_NETWORK: netns needs network namespaces, but {why}")
        try:
            subnet = ipaddress.IPv4Network(str(config["local_subnet"]))
        except ValueError as exc:
            problems.append(f"LOCAL_PODVM_SUBNET: {exc}")
        if problems:
            raise ConfigError(problems)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        use_netns = mode == "netns" or (mode == "auto" and not unavailable_reason())
        return LocalProvider(directory, owner, LocalNetwork(subnet) if use_netns else None)


PLUGIN = LocalPlugin()
