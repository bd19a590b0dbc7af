"""The whole guest path with the stand-in agent: CreateContainer for a spec naming an encrypted image
makes the agent pull it through the CDH (attested to a running KBS), and the container runs a file
from that image; without the key, CreateContainer fails with the CDH's message."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from google.protobuf.empty_pb2 import Empty

from podvm.standin_agent.agent import StandinAgent
from podvm.standin_agent.images import IMAGE_NAME_ANNOTATION
from protocols.agent import AGENT_SERVICE
from protocols.proto import agent_pb2, oci_pb2
from protocols.ttrpc.client import Client
from protocols.ttrpc.server import Server
from protocols.ttrpc.status import TtrpcError
from tests.images.cdh_support import KEY_PATH, cdh, world
from tests.images.test_cdh import DECRYPT_MESSAGE


@asynccontextmanager
async def standin_agent(tmp_path: Path, cdh_socket: Path) -> AsyncIterator[Client]:
    agent = StandinAgent(tmp_path / "agent", cdh_socket)
    server = Server(agent.services())
    await server.listen_unix(tmp_path / "agent.sock")
    try:
        async with await Client.connect_unix(tmp_path / "agent.sock") as client:
            yield client
    finally:
        await agent.close()
        await server.close()


def _create(image: str) -> agent_pb2.CreateContainerRequest:
    spec = oci_pb2.Spec(
        Process=oci_pb2.Process(Args=["/bin/hello"]), Annotations={IMAGE_NAME_ANNOTATION: image}
    )
    return agent_pb2.CreateContainerRequest(container_id="c1", exec_id="c1", OCI=spec)


async def test_standin_agent_runs_a_file_from_an_encrypted_image(tmp_path):
    async with world(tmp_path) as w:
        async with aiohttp.ClientSession() as http:
            await w.kbs.put_resource(http, KEY_PATH, w.kek)
        async with cdh(w), standin_agent(tmp_path, tmp_path / "cdh.sock") as agent:
            await agent.unary(AGENT_SERVICE, "CreateContainer", _create(w.image), Empty, timeout=120)
            start = agent_pb2.StartContainerRequest(container_id="c1")
            await agent.unary(AGENT_SERVICE, "StartContainer", start, Empty)
            read = agent_pb2.ReadStreamRequest(container_id="c1", len=1024)
            output = await agent.unary(AGENT_SERVICE, "ReadStdout", read, agent_pb2.ReadStreamResponse)
            wait = agent_pb2.WaitProcessRequest(container_id="c1")
            status = await agent.unary(AGENT_SERVICE, "WaitProcess", wait, agent_pb2.WaitProcessResponse)
    assert output.data == b"hello from an encrypted image\n"
    assert status.status == 0


async def test_create_container_fails_with_the_cdh_message_without_the_key(tmp_path):
    async with world(tmp_path) as w, cdh(w), standin_agent(tmp_path, tmp_path / "cdh.sock") as agent:
        with pytest.raises(TtrpcError) as caught:
            await agent.unary(AGENT_SERVICE, "CreateContainer", _create(w.image), Empty, timeout=120)
    assert caught.value.message == DECRYPT_MESSAGE
    assert not (tmp_path / "agent" / "containers" / "c1" / "rootfs").exists()
