"""The stand-in agent starts a container process in the pod network namespace the spec names."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from podvm.standin_agent.processes import Process


@pytest.fixture
def namespace() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("making a network namespace needs root")
    name = f"pp-standin-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    yield Path("/run/netns") / name
    subprocess.run(["ip", "netns", "delete", name], check=True)


async def test_process_runs_in_the_named_network_namespace(namespace: Path, tmp_path: Path) -> None:
    process = await Process.spawn(["readlink", "/proc/self/ns/net"], [], tmp_path, netns=str(namespace))
    assert await process.wait() == 0
    inside = (await process.stdout.read(4096)).decode().strip()
    assert inside == f"net:[{namespace.stat().st_ino}]"
    assert inside != os.readlink("/proc/self/ns/net")
