"""Guest-owned storage secrets on a real pod VM (libvirt, QEMU): with ENABLE_SCRATCH_SPACE the pod VM
encrypts the scratch disk the provider attached (LUKS2, ephemeral key) and a container's files on it
never reach the host in plaintext; a KBS-keyed volume mounts after attestation and refuses to mount,
untouched, when the resource policy denies its key; StopVM leaves no volume.

The container (run directly by the stand-in agent, as root in the VM) checks `cryptsetup status`,
writes a marker and asks the CDH for the two secure mounts; the host then reads the scratch volume's
raw bytes while the VM still runs."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf.empty_pb2 import Empty

from podvm.image.build import BuildResult
from protocols.proto import agent_pb2, oci_pb2
from shimdriver.driver import AgentClient, shim_annotations
from tests.e2e.stack import (
    ConsoleWatcher,
    HostKbs,
    LibvirtAdaptor,
    ScratchPool,
    adaptor_env,
    kbs_initdata,
    leftovers,
    scratch_dir,
)

pytestmark = [pytest.mark.kvm, pytest.mark.timeout(2400)]

VOLUME_KEY = "default/e2e/volume-key"
DENIED_KEY = "default/e2e/denied-key"
# The sample TEE gets every resource but the denied key.
RESOURCE_POLICY = """package policy
import rego.v1
default allow := false
allow if {
    data.plugin == "resource"
    input.submods.cpu0["ear.status"] == "affirming"
    data["resource-path"] != ["default", "e2e", "denied-key"]
}
"""
LUKS2_MAGIC = b"LUKS\xba\xbe\x00\x02"
PYTHON = "/opt/peerpods/bin/python"  # the image's venv: the container program uses our ttRPC client
PATH = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"
PROGRAM = r"""
import asyncio, hashlib, os, subprocess, sys
from protocols.proto import securemount_pb2
from protocols.ttrpc.client import Client
from protocols.ttrpc.status import TtrpcError

def sh(*argv):
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout

lines = sh("cryptsetup", "status", "scratch").splitlines()[1:]
status = {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in lines)}
mounted = os.path.ismount("/run/kata-containers/image")
print("scratch:", status["type"], status["cipher"], mounted)
for path in ("/run/kata-containers/image/marker.txt", "/run/peerpods-standin-agent/marker.txt"):
    with open(path, "w") as out:
        out.write((sys.argv[1] + "\n") * 20000)
os.sync()

def loop(name):
    path = f"/run/kata-containers/image/{name}.img"
    with open(path, "wb") as out:
        out.truncate(64 << 20)
    return sh("losetup", "--find", "--show", path).strip()

def digest(device):
    with open(device, "rb") as disk:
        return hashlib.sha256(disk.read()).hexdigest()

async def mount(client, key, device, where):
    options = {"devicePath": device, "sourceType": "empty", "targetType": "fileSystem",
               "encryptionType": "luks2", "key": key}
    request = securemount_pb2.SecureMountRequest(
        volume_type="block-device", options=options, mount_point=where)
    await client.unary("api.SecureMountService", "SecureMount", request,
                       securemount_pb2.SecureMountResponse, timeout=900)

async def main():
    socket, waited = "/run/confidential-containers/cdh.sock", 0
    while not os.path.exists(socket) and waited < 600:  # the CDH may start after the agent
        await asyncio.sleep(1)
        waited += 1
    async with await Client.connect_unix(socket) as client:
        volume = loop("volume")
        await mount(client, "kbs:///default/e2e/volume-key", volume, "/run/e2e-volume")
        with open("/run/e2e-volume/data", "w") as out:
            out.write("kept")
        luks = subprocess.run(["cryptsetup", "isLuks", "--type", "luks2", volume]).returncode == 0
        mounted = os.path.ismount("/run/e2e-volume")
        print("volume:", "LUKS2" if luks else "PLAIN", "mounted" if mounted else "absent")
        denied = loop("denied")
        before = digest(denied)
        try:
            await mount(client, "kbs:///default/e2e/denied-key", denied, "/run/e2e-denied")
            print("denied: MOUNTED")
        except TtrpcError as exc:
            print("denied:", exc.message, "untouched" if digest(denied) == before else "CHANGED")

asyncio.run(main())
"""


@pytest.fixture
def kbs(tmp_path: Path) -> Iterator[HostKbs]:
    with HostKbs(tmp_path / "kbs", VOLUME_KEY, secrets.token_bytes(32)) as server:
        seed(server)
        yield server


def seed(server: HostKbs) -> None:
    """The denied key and the resource policy, into the running KBS's storage (read per request)."""
    from kbs.config import build_broker, parse_config
    from kbs.store import ResourcePath

    broker = build_broker(parse_config((server.directory / "kbs.toml").read_text()))

    async def write() -> None:
        await broker.start()
        try:
            await broker.policy.set(RESOURCE_POLICY)
            await broker.store.put(ResourcePath.parse(DENIED_KEY.split("/")), b"never released")
        finally:
            broker.policy.release()
            await broker.close()

    asyncio.run(write())


def marker_in(path: Path, marker: bytes, chunk: int = 8 << 20) -> bool:
    with path.open("rb") as raw:
        tail = b""
        while block := raw.read(chunk):
            if marker in tail + block:
                return True
            tail = block[-len(marker) :]
    return False


async def test_scratch_disk_and_kbs_keyed_volume(
    scratch_pool: ScratchPool, podvm_image: BuildResult, run_id: str, kbs: HostKbs, domain_type: str
) -> None:
    owner = f"e2e-scratch-{run_id}"
    sandbox_id = secrets.token_hex(32)
    marker = f"peerpods-marker-{secrets.token_hex(16)}"
    env = adaptor_env(
        scratch_pool,
        domain_type,
        PROXY_TIMEOUT="20m" if domain_type != "kvm" else "5m",
        INITDATA=kbs_initdata(kbs.guest_url),
        ENABLE_SCRATCH_SPACE="true",
        SCRATCH_SPACE_SIZE="1",
    )
    container = sandbox_id[:12] + "-c0"
    with scratch_dir(run_id + "s") as directory, ConsoleWatcher(owner) as consoles:
        adaptor = LibvirtAdaptor(directory, owner, env)
        await adaptor.start()
        hypervisor = adaptor.hypervisor
        try:
            socket = await hypervisor.create_vm(sandbox_id, shim_annotations("scratch", "default"))
            try:
                await hypervisor.start_vm(sandbox_id)
                agent = await AgentClient.dial(socket)
                try:
                    await agent.check()
                    sandbox = agent_pb2.CreateSandboxRequest(sandbox_id=sandbox_id)
                    await agent.call("CreateSandbox", sandbox, Empty, 300)
                    process = oci_pb2.Process(Args=[PYTHON, "-c", PROGRAM, marker], Env=[PATH], Cwd="/")
                    create = agent_pb2.CreateContainerRequest(
                        container_id=container, OCI=oci_pb2.Spec(Process=process)
                    )
                    await agent.call("CreateContainer", create, Empty, 300)
                    start = agent_pb2.StartContainerRequest(container_id=container)
                    await agent.call("StartContainer", start, Empty, 60)
                    wait = agent_pb2.WaitProcessRequest(container_id=container)
                    stdout, stderr, waited = await asyncio.gather(
                        agent.read_all("ReadStdout", container),
                        agent.read_all("ReadStderr", container),
                        agent.call("WaitProcess", wait, agent_pb2.WaitProcessResponse, None),
                    )
                    [name] = consoles.domain_names
                    raw = scratch_pool.path / f"{name}-scratch.raw"
                    with raw.open("rb") as disk:
                        header = disk.read(len(LUKS2_MAGIC))
                    plaintext_on_host = marker_in(raw, marker.encode())
                finally:
                    await agent.close()
            finally:
                await hypervisor.stop_vm(sandbox_id)
        except BaseException:
            for console in consoles.consoles.values():
                print(f"--- serial console of {console.domain_name}:\n{console.text()}")
            print(f"--- adaptor log:\n{adaptor.log.read_text()}\n--- KBS log:\n{kbs.log.read_text()}")
            raise
        finally:
            await adaptor.stop()
        names = list(consoles.domain_names)
    print(stdout.decode(), stderr.decode())
    assert waited.status == 0, stderr.decode()
    lines = stdout.decode().splitlines()
    assert lines[0] == "scratch: LUKS2 aes-xts-plain64 True"
    assert header == LUKS2_MAGIC, "the host sees a LUKS2 header at the start of the scratch volume"
    assert not plaintext_on_host, "the container's marker reached the host's scratch volume in plaintext"
    assert lines[1] == "volume: LUKS2 mounted"
    refused = "[CDH] [ERROR]: Error when mounting Block device: Failed to get key: Get Resource failed"
    assert lines[2] == f"denied: {refused} untouched"
    assert leftovers(owner, names, scratch_pool) == []
