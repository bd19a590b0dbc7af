"""Helpers the benchmarks share: percentiles and a scratch `cloud-api-adaptor local` with one pod."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from protocols.ttrpc.client import Client
from shimdriver.driver import HypervisorClient, shim_annotations


def percentile(samples: Sequence[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summary_ms(samples: Sequence[float]) -> str:
    return (
        f"p50 {percentile(samples, 0.5) * 1e3:.3f} ms, p99 {percentile(samples, 0.99) * 1e3:.3f} ms, "
        f"mean {statistics.fmean(samples) * 1e3:.3f} ms over {len(samples)}"
    )


@dataclass
class LocalPod:
    hypervisor: HypervisorClient
    sandbox_id: str
    agent_socket: str  # through proxy + TLS + forwarder
    direct_socket: str  # the stand-in agent's own socket inside the local pod VM
    scratch: Path
    adaptor_pid: int

    def processes(self) -> dict[str, int]:
        """The pids of every hop, found by the scratch directory in their command lines."""
        found = {"adaptor (proxy)": self.adaptor_pid, "bench client": os.getpid()}
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            with contextlib.suppress(OSError):
                words = cmdline.read_bytes().split(b"\0")
                if not any(str(self.scratch).encode() in word for word in words):
                    continue
                text = b" ".join(words)
                if b"agent-protocol-forwarder" in text:
                    found["forwarder"] = int(cmdline.parent.name)
                elif b"standin-agent" in text:
                    found["stand-in agent"] = int(cmdline.parent.name)
        return found


def _first(directory: Path, pattern: str) -> Path | None:
    return next(directory.glob(pattern), None)


async def _agent_socket(vms: Path) -> Path:
    """The stand-in agent's socket: the tunnel can be up (forwarder listening) a moment before it."""
    for _ in range(200):
        if found := _first(vms, "*/agent.sock"):
            return found
        await asyncio.sleep(0.05)
    raise RuntimeError(f"no agent socket under {vms}")


def cpu_seconds(pid: int) -> float:
    fields = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.asynccontextmanager
async def local_pod(*adaptor_args: str) -> AsyncIterator[LocalPod]:
    scratch = Path(tempfile.mkdtemp(prefix="pp-bench-", dir="/tmp"))
    socket = scratch / "hypervisor.sock"
    adaptor = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("cloud-api-adaptor")), "local",
        "--socket", str(socket), "--pods-dir", str(scratch / "pods"), "--state-dir", str(scratch / "state"),
        "--local-dir", str(scratch / "vms"), "--local-network", "loopback", *adaptor_args,
        stdout=asyncio.subprocess.DEVNULL, stderr=(scratch / "adaptor.log").open("wb"),
    )  # fmt: skip
    try:
        for _ in range(400):
            with contextlib.suppress(OSError):
                await (await Client.connect_unix(socket)).close()
                break
            await asyncio.sleep(0.05)
        hypervisor = HypervisorClient(socket)
        sandbox_id = secrets.token_hex(32)
        agent_socket = await hypervisor.create_vm(sandbox_id, shim_annotations("bench", "default"))
        await hypervisor.start_vm(sandbox_id)
        direct = await _agent_socket(scratch / "vms")
        try:
            yield LocalPod(hypervisor, sandbox_id, agent_socket, str(direct), scratch, adaptor.pid)
        finally:
            await hypervisor.stop_vm(sandbox_id)
    finally:
        adaptor.send_signal(signal.SIGTERM)
        await adaptor.wait()
        shutil.rmtree(scratch, ignore_errors=True)
