"""Hostile or oversized input on the hypervisor socket of a real `cloud-api-adaptor local` process.

Whatever a caller sends, it gets INVALID_ARGUMENT with the reason, nothing reaches the pods
directory, and the adaptor's log has neither a traceback nor the caller's control characters.
"""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from protocols.initdata import MAX_TOML_BYTES
from protocols.proto import hypervisor_pb2, ttrpc_pb2
from protocols.ttrpc.envelope import encode_request
from protocols.ttrpc.frames import MessageType, encode_frame
from protocols.ttrpc.status import Code, TtrpcError
from shimdriver.driver import HYPERVISOR, shim_annotations
from tests.adaptor.conftest import LocalAdaptor
from tests.adaptor.test_userdata import incompressible_toml
from tests.ttrpc.conftest import RawPeer

BAD_IDS = ["sb-1\n", "sb-2\r", "sb\x1b[31m-3", "sb\x00-4", "../sb-5"]


async def refused(call: object) -> TtrpcError:
    with pytest.raises(TtrpcError) as info:
        await call  # type: ignore[misc]
    assert info.value.code == Code.INVALID_ARGUMENT, info.value
    return info.value


def assert_clean_log(adaptor: LocalAdaptor) -> None:
    text = adaptor.log.read_text(errors="replace")
    assert "Traceback" not in text
    assert not any(ch in text for ch in "\r\x1b\x00"), "caller's control characters reached the log"


async def test_ids_with_control_characters_are_refused_everywhere(adaptor: LocalAdaptor) -> None:
    for sandbox_id in BAD_IDS:
        error = await refused(adaptor.hypervisor.create_vm(sandbox_id, shim_annotations("p", "ns")))
        assert "invalid sandbox id" in error.message
        await refused(adaptor.hypervisor.start_vm(sandbox_id))
        await refused(adaptor.hypervisor.stop_vm(sandbox_id))
    pods = adaptor.directory / "pods"
    assert not pods.exists() or list(pods.iterdir()) == []
    assert_clean_log(adaptor)


async def test_pod_names_with_control_characters_are_refused(adaptor: LocalAdaptor) -> None:
    for name, namespace in [("p\n", "ns"), ("p", "ns\x1b[2J"), ("p\rforged", "ns")]:
        error = await refused(adaptor.hypervisor.create_vm("sb-names", shim_annotations(name, namespace)))
        assert "not a valid Kubernetes" in error.message
    assert_clean_log(adaptor)


async def test_initdata_the_pod_vm_would_refuse_is_refused_at_create(adaptor: LocalAdaptor) -> None:
    too_large = shim_annotations("p", "ns", cc_init_data=incompressible_toml(MAX_TOML_BYTES + 1))
    error = await refused(adaptor.hypervisor.create_vm("sb-large", too_large))
    assert f"at most {MAX_TOML_BYTES}" in error.message
    nested = shim_annotations("p", "ns", cc_init_data='algorithm = "sha256"\nx = ' + "[" * 100_000)
    error = await refused(adaptor.hypervisor.create_vm("sb-nested", nested))
    assert "nested too deeply" in error.message
    assert_clean_log(adaptor)


async def test_state_is_private_even_when_it_was_not(short_dir: Path) -> None:
    """The database holds every pod's initdata: 0600 in a 0700 directory, fixed at start if need be."""
    adaptor = LocalAdaptor(short_dir)
    adaptor.state_dir.mkdir(mode=0o755)
    os.chmod(adaptor.state_dir, 0o755)
    database = adaptor.state_dir / "sandboxes.db"
    database.touch(mode=0o644)
    os.chmod(database, 0o644)
    await adaptor.start()
    try:
        await adaptor.hypervisor.create_vm("sb-private", shim_annotations("p", "ns"))
        assert stat.S_IMODE(adaptor.state_dir.stat().st_mode) == 0o700
        for path in adaptor.state_dir.glob("sandboxes.db*"):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    finally:
        await adaptor.stop()


async def test_slow_clients_on_the_hypervisor_socket_are_dropped(short_dir: Path) -> None:
    """A frame left incomplete past PEERPODS_FRAME_DEADLINE costs its connection; idle ones stay."""
    adaptor = LocalAdaptor(short_dir)
    adaptor.args += ("--frame-deadline", "200ms")
    await adaptor.start()
    try:
        idle = await RawPeer.connect(adaptor.socket)
        slow = await RawPeer.connect(adaptor.socket)
        request = encode_request(HYPERVISOR, "Version", hypervisor_pb2.VersionRequest().SerializeToString())
        slow.writer.write(encode_frame(1, MessageType.REQUEST, request)[:7])
        async with asyncio.timeout(30):
            assert await slow.reader.read() == b"", "the server kept a connection with half a frame"
        idle.send(1, MessageType.REQUEST, request)
        response = ttrpc_pb2.Response.FromString((await idle.receive()).payload)
        assert hypervisor_pb2.VersionResponse.FromString(response.payload).version
        await slow.close()
        await idle.close()
        assert "frame was still incomplete after 0.2s" in adaptor.log.read_text()
    finally:
        await adaptor.stop()
