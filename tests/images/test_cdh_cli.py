"""`python -m podvm.cdh` as the pod VM runs it: cdh.toml from a file, ready when systemd is told so
(NOTIFY_SOCKET), upstream's API on the socket, a clean stop on SIGTERM; a broken cdh.toml stops it
with a message."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys

from protocols.proto import cdh_pb2
from protocols.ttrpc.client import Client


async def test_cdh_daemon_serves_until_sigterm(tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"s3cret")
    config = tmp_path / "cdh.toml"
    config.write_text(f'socket = "unix://{tmp_path}/cdh.sock"\n[image]\nwork_dir = "{tmp_path}/work"\n')
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.setblocking(False)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "podvm.cdh",
        "-c",
        str(config),
        "--sample-attester",
        env={**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify")},
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        ready = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(notify, 64), 60)
        assert ready == b"READY=1"
        async with await Client.connect_unix(tmp_path / "cdh.sock") as client:
            reply = await client.unary(
                "api.GetResourceService",
                "GetResource",
                cdh_pb2.GetResourceRequest(ResourcePath=f"file://{secret}"),
                cdh_pb2.GetResourceResponse,
            )
        assert reply.Resource == b"s3cret"
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 60)
        notify.close()
    assert process.returncode == 0


def test_broken_config_stops_with_a_message(tmp_path):
    config = tmp_path / "cdh.toml"
    config.write_text("[kbc]\nurl = 3\n")
    result = subprocess.run(
        [sys.executable, "-m", "podvm.cdh", "-c", str(config), "--sample-attester"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "cdh.toml: url must be a string" in result.stderr
    assert "Traceback" not in result.stderr
