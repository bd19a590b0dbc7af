"""SecureMount on real LUKS2 (cryptsetup on a loop device, as root) through the CDH's ttRPC socket,
the key a KBS resource released after attestation: refused before the device is touched when the
resource policy denies the key; formatted with the released key when it does not.

The full open + mkfs + mount needs device-mapper (dm-crypt); where the kernel has none (some CI
sandboxes) that test skips and says so; the pod VM end-to-end test always runs it."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from podvm.attestation_agent.attester import SampleAttester
from podvm.cdh import luks
from podvm.cdh.config import CdhConfig
from podvm.cdh.hub import ConfidentialDataHub
from protocols.proto import securemount_pb2
from protocols.ttrpc.client import Client
from protocols.ttrpc.status import TtrpcError
from tests.kbs.support import RunningKbs, admin_post, b64url, start_kbs

KEY_PATH = "default/volumes/db"
DENIED_PATH = "default/volumes/denied"
# Affirming evidence gets every resource but the denied one.
POLICY = """package policy
import rego.v1
default allow := false
allow if {
    data.plugin == "resource"
    input.submods.cpu0["ear.status"] == "affirming"
    data["resource-path"] != ["default", "volumes", "denied"]
}
"""
DEVICE_BYTES = 32 << 20
HAS_DM = "device-mapper" in Path("/proc/misc").read_text()
NO_DM = "the kernel has no device-mapper (not in /proc/misc): dm-crypt cannot open the volume here"


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root for loop devices and cryptsetup"
    if shutil.which("cryptsetup") is None or shutil.which("losetup") is None:
        return "cryptsetup or losetup is missing (Debian cryptsetup-bin; scripts/bootstrap installs it)"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=_missing() or "")


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[str]:
    backing = tmp_path / "disk.img"
    with backing.open("wb") as disk:
        disk.write(b"plain data already on the disk\n" * 1024)
        disk.truncate(DEVICE_BYTES)
    attached = subprocess.run(["losetup", "--find", "--show", str(backing)], capture_output=True, text=True)
    if attached.returncode != 0:
        pytest.skip(f"no loop device: {attached.stderr.strip()}")
    device = attached.stdout.strip()
    try:
        yield device
    finally:
        subprocess.run(["losetup", "--detach", device], check=False)


@asynccontextmanager
async def hub(tmp_path: Path, kbs: RunningKbs | None) -> AsyncIterator[Client]:
    socket = tmp_path / "cdh.sock"
    config = CdhConfig(socket=socket, kbs_url=kbs.url if kbs else None)
    cdh = ConfidentialDataHub(config, SampleAttester())
    server = await cdh.serve()
    try:
        async with await Client.connect_unix(socket) as client:
            yield client
    finally:
        await server.close()
        await cdh.close()


@asynccontextmanager
async def kbs_with_keys(tmp_path: Path) -> AsyncIterator[RunningKbs]:
    kbs = await start_kbs(tmp_path)
    try:
        async with aiohttp.ClientSession() as http:
            await kbs.set_policies(http)
            await admin_post(http, kbs, "resource-policy", {"policy": b64url(POLICY)})
            await kbs.put_resource(http, KEY_PATH, b"volume key of the db volume")
            await kbs.put_resource(http, DENIED_PATH, b"never released")
        yield kbs
    finally:
        await kbs.runner.cleanup()


async def secure_mount(client: Client, options: dict[str, str], mount_point: Path) -> None:
    request = securemount_pb2.SecureMountRequest(
        volume_type="block-device", options=options, mount_point=str(mount_point)
    )
    await client.unary(
        "api.SecureMountService", "SecureMount", request, securemount_pb2.SecureMountResponse, timeout=300
    )


def options(device: str, key: str, source: str = "empty") -> dict[str, str]:
    return {
        "devicePath": device,
        "sourceType": source,
        "targetType": "fileSystem",
        "encryptionType": "luks2",
        "filesystemType": "ext4",
        "key": key,
    }


def digest(device: str) -> str:
    with open(device, "rb") as disk:
        return hashlib.sha256(disk.read()).hexdigest()


@pytest.mark.parametrize("path", [DENIED_PATH, "default/volumes/absent"])
async def test_key_refused_by_the_kbs_leaves_the_device_untouched(
    tmp_path: Path, loop_device: str, path: str
) -> None:
    before = digest(loop_device)
    async with kbs_with_keys(tmp_path) as kbs, hub(tmp_path, kbs) as client:
        with pytest.raises(TtrpcError) as caught:
            await secure_mount(client, options(loop_device, f"kbs:///{path}"), tmp_path / "mnt")
    assert caught.value.message == (
        "[CDH] [ERROR]: Error when mounting Block device: Failed to get key: Get Resource failed"
    )
    assert digest(loop_device) == before
    assert not await luks.is_luks2(loop_device)


async def test_no_kbs_configured_and_sealed_secrets_refused_untouched(
    tmp_path: Path, loop_device: str
) -> None:
    before = digest(loop_device)
    async with hub(tmp_path, None) as client:
        for key, said in (("kbs:///default/volumes/db", "Get Resource failed"), ("sealed.a.b.c", "sealed")):
            with pytest.raises(TtrpcError) as caught:
                await secure_mount(client, options(loop_device, key), tmp_path / "mnt")
            assert said in caught.value.message
        with pytest.raises(TtrpcError) as caught:
            await secure_mount(
                client, {**options(loop_device, ""), "encryptionType": "zfs"}, tmp_path / "mnt"
            )
        assert caught.value.message.startswith(
            "[CDH] [ERROR]: Error when mounting Block device: encryptionType"
        )
    assert digest(loop_device) == before


@pytest.mark.skipif(HAS_DM, reason="covers kernels without device-mapper; the mount test runs instead")
async def test_without_device_mapper_the_device_is_formatted_with_the_released_key(
    tmp_path: Path, loop_device: str
) -> None:
    async with kbs_with_keys(tmp_path) as kbs, hub(tmp_path, kbs) as client:
        with pytest.raises(TtrpcError) as caught:
            await secure_mount(client, options(loop_device, f"kbs:///{KEY_PATH}"), tmp_path / "mnt")
    assert "luksOpen failed" in caught.value.message
    assert await luks.is_luks2(loop_device)
    assert await luks.key_opens(loop_device, b"volume key of the db volume")
    assert not await luks.key_opens(loop_device, b"another key")


@pytest.mark.skipif(not HAS_DM, reason=NO_DM)
async def test_kbs_keyed_volume_mounts_and_keeps_its_data(tmp_path: Path, loop_device: str) -> None:
    mount_point = tmp_path / "mnt"
    async with kbs_with_keys(tmp_path) as kbs, hub(tmp_path, kbs) as client:
        await secure_mount(
            client, {**options(loop_device, f"kbs:///{KEY_PATH}"), "mapperName": "pp-test-db"}, mount_point
        )
        try:
            (mount_point / "marker").write_text("kept")
        finally:
            subprocess.run(["umount", str(mount_point)], check=True)
            await luks.close_device("pp-test-db")
        # Second pod: sourceType empty again, but the volume is LUKS2 already: opened, not wiped.
        await secure_mount(
            client, {**options(loop_device, f"kbs:///{KEY_PATH}"), "mapperName": "pp-test-db"}, mount_point
        )
        try:
            assert (mount_point / "marker").read_text() == "kept"
        finally:
            subprocess.run(["umount", str(mount_point)], check=True)
            await luks.close_device("pp-test-db")
    with open(loop_device, "rb") as disk:
        assert b"kept" not in disk.read()
