"""Encrypted block volumes for the stand-in agent, as kata-agent handles them: a container storage
that asks for encryption (`encryption_key=` driver option) is mounted by the confidential data hub
(`api.SecureMountService/SecureMount`) before the container is created; its error is the caller's."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from podvm.cdh.volumes import secure_mount_request
from protocols.proto import agent_pb2, securemount_pb2
from protocols.ttrpc.client import Client
from protocols.ttrpc.status import Code, TtrpcError

MOUNT_TIMEOUT = 600.0  # LUKS2 key derivation and mkfs in a slow (emulated) VM


async def mount_encrypted_storages(cdh_socket: Path, storages: Iterable[agent_pb2.Storage]) -> None:
    requests = [r for r in map(secure_mount_request, storages) if r is not None]
    if not requests:
        return
    try:
        client = await Client.connect_unix(cdh_socket)
    except OSError as exc:
        raise TtrpcError(Code.UNAVAILABLE, f"confidential data hub at {cdh_socket}: {exc.strerror}") from None
    async with client:
        for request in requests:
            await client.unary(
                "api.SecureMountService",
                "SecureMount",
                request,
                securemount_pb2.SecureMountResponse,
                timeout=MOUNT_TIMEOUT,
            )
