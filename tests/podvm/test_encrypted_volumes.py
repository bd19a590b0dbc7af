"""Encrypted container volumes: the SecureMount request kata-agent's block storage handler sends for
`encryption_key=ephemeral` (upstream) and `encryption_key=kbs:///...` (a KBS key per volume), and
the stand-in agent asking the CDH before it creates the container: a volume whose key the KBS
refuses fails CreateContainer with the CDH's error and is left untouched."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf.empty_pb2 import Empty

from podvm.cdh.mount_request import KeyKind, parse_secure_mount
from podvm.cdh.volumes import secure_mount_request
from podvm.standin_agent.agent import StandinAgent
from protocols.proto import agent_pb2, oci_pb2
from protocols.ttrpc.client import Client
from protocols.ttrpc.server import Server
from protocols.ttrpc.status import TtrpcError
from tests.podvm.test_securemount_luks import (
    DENIED_PATH,
    _missing,
    digest,
    hub,
    kbs_with_keys,
    loop_device,
)

__all__ = ["loop_device"]  # a fixture


def storage(source: str, *driver_options: str, driver: str = "blk") -> agent_pb2.Storage:
    return agent_pb2.Storage(
        driver=driver, driver_options=list(driver_options), source=source, fstype="ext4", mount_point="/run/v"
    )


def test_upstream_ephemeral_block_storage() -> None:
    request = secure_mount_request(storage("252:16", "encryption_key=ephemeral", "create_filesystem"))
    assert request is not None
    assert request.volume_type == "block-device" and request.mount_point == "/run/v"
    assert dict(request.options) == {
        "deviceId": "252:16",
        "sourceType": "empty",
        "targetType": "fileSystem",
        "encryptionType": "luks2",
        "filesystemType": "ext4",
        "mkfsOpts": "-O ^has_journal -m 0 -i 163840 -I 128",
    }
    mount = parse_secure_mount(request.volume_type, request.options, request.flags, request.mount_point)
    assert mount.key.kind is KeyKind.EPHEMERAL and mount.device_id == (252, 16)


def test_kbs_key_per_volume() -> None:
    request = secure_mount_request(storage("/dev/vdd", "encryption_key=kbs:///default/volumes/db"))
    assert request is not None
    mount = parse_secure_mount(request.volume_type, request.options, request.flags, request.mount_point)
    assert (mount.key.kind, mount.key.uri, mount.device_path) == (
        KeyKind.RESOURCE,
        "kbs:///default/volumes/db",
        "/dev/vdd",
    )


@pytest.mark.parametrize(
    "other",
    [
        storage("/dev/vdd"),
        storage("tmpfs", "encryption_key=ephemeral", driver="ephemeral"),
        storage("/dev/vdd", "x=y"),
    ],
)
def test_other_storages_are_not_secure_mounts(other: agent_pb2.Storage) -> None:
    assert secure_mount_request(other) is None


@pytest.mark.skipif(_missing() is not None, reason=_missing() or "")
async def test_standin_agent_refuses_a_volume_whose_key_is_denied(tmp_path: Path, loop_device: str) -> None:
    before = digest(loop_device)
    agent = StandinAgent(tmp_path / "agent", tmp_path / "cdh.sock")
    server = Server(agent.services())
    await server.listen_unix(tmp_path / "agent.sock")
    volume = storage(loop_device, f"encryption_key=kbs:///{DENIED_PATH}")
    spec = oci_pb2.Spec(Process=oci_pb2.Process(Args=["/bin/true"]))
    request = agent_pb2.CreateContainerRequest(container_id="c1", OCI=spec, storages=[volume])
    try:
        async with (
            kbs_with_keys(tmp_path) as kbs,
            hub(tmp_path, kbs),
            await Client.connect_unix(tmp_path / "agent.sock") as client,
        ):
            with pytest.raises(TtrpcError) as caught:
                await client.unary("grpc.AgentService", "CreateContainer", request, Empty, timeout=300)
    finally:
        await server.close()
        await agent.close()
    assert caught.value.message.endswith("Failed to get key: Get Resource failed")
    assert digest(loop_device) == before
    assert agent.containers == {}
