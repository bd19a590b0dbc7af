"""`peerpods-demo`: a whole pod lifecycle on the embedded `local` provider, with a timeline.

It starts `cloud-api-adaptor local` in a scratch directory, drives it exactly as the Kata shim
would, prints what the container wrote and how long each step took, then checks that stopping
the pod left no pod VM behind. As root it also shows the pod network: the adaptor runs in a worker
namespace the demo makes, the pod gets an IP from a CNI-like bridge there, and a server the
container runs inside the pod VM answers a request sent to that pod IP through the VXLAN tunnel.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from protocols import version
from protocols.podnet.netlink import enter_namespace
from protocols.ttrpc.client import Client
from shimdriver import demo_network
from shimdriver.driver import HypervisorClient, run_pod

DEFAULT_COMMAND = ["sh", "-c", "echo hello from a peer pod; uname -sr"]
SERVER_PORT = 8080
# The container of the network demo: print, serve one request at the pod IP, exit.
SERVER = """
import socket, sys
ip, port = sys.argv[1], int(sys.argv[2])
print("hello from a peer pod; serving", ip, port, flush=True)
with socket.create_server((ip, port)) as server:
    conn, peer = server.accept()
    with conn:
        request = conn.recv(4096)
        conn.sendall(b"reply from inside the pod VM to " + request)
    print("served", peer[0], flush=True)
"""


async def wait_for_socket(path: Path, adaptor: asyncio.subprocess.Process, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if adaptor.returncode is not None:
            raise RuntimeError(f"cloud-api-adaptor exited with status {adaptor.returncode}")
        with contextlib.suppress(OSError):
            client = await Client.connect_unix(path)
            await client.close()
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"cloud-api-adaptor did not listen on {path} within {timeout:g}s")


async def ask_pod(worker: str, pod_ip: str) -> str:
    """From the worker node, one request to the pod IP, retried until the container listens."""
    for _ in range(300):
        try:
            reply = await asyncio.to_thread(
                demo_network.request_from, worker, pod_ip, SERVER_PORT, b"a request to the pod IP", 5.0
            )
            return reply.decode(errors="replace")
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"nothing answered at {pod_ip}:{SERVER_PORT}")


async def demo(command: list[str], keep: bool, with_network: bool) -> int:
    network = await asyncio.to_thread(demo_network.create) if with_network else None
    try:
        return await _demo(command, keep, network)
    finally:
        if network is not None:
            await asyncio.to_thread(demo_network.remove, network)


async def _demo(command: list[str], keep: bool, network: demo_network.DemoNetwork | None) -> int:
    scratch = Path(tempfile.mkdtemp(prefix="pp-demo-", dir="/tmp"))
    socket = scratch / "hypervisor.sock"
    local_vms = scratch / "vms"
    adaptor_bin = Path(sys.executable).with_name("cloud-api-adaptor")
    log_path = scratch / "adaptor.log"
    print(f"scratch directory: {scratch} (adaptor log: {log_path})")
    with log_path.open("wb") as log:
        adaptor = await asyncio.create_subprocess_exec(
            str(adaptor_bin), "local",
            "--socket", str(socket), "--pods-dir", str(scratch / "pods"),
            "--state-dir", str(scratch / "state"), "--local-dir", str(local_vms),
            "--local-network", "netns" if network else "loopback",
            stdout=log, stderr=log,
            # As a worker node: its own network namespace, where the pod's namespace is wired too.
            preexec_fn=partial(enter_namespace, network.worker_path) if network else None,
        )  # fmt: skip
        try:
            await wait_for_socket(socket, adaptor)
            hypervisor = HypervisorClient(socket)
            print(f"cloud-api-adaptor {await hypervisor.version()} is serving {socket}")
            if network is None:
                result = await run_pod(hypervisor, secrets.token_hex(32), command)
            else:
                pod_ip = str(demo_network.POD_IP.ip)
                print(f"pod network namespace {network.pod_path}, pod IP {pod_ip}")
                server = ["python3", "-c", SERVER, pod_ip, str(SERVER_PORT)]
                result, reply = await asyncio.gather(
                    run_pod(hypervisor, secrets.token_hex(32), server, netns=network.pod_path),
                    ask_pod(network.worker_path, pod_ip),
                )
                print(f"request from the worker node to {pod_ip}:{SERVER_PORT} answered: {reply!r}")
        finally:
            adaptor.send_signal(signal.SIGTERM)
            await adaptor.wait()
    print("\ncontainer stdout:\n" + result.stdout.decode(errors="replace").rstrip())
    if result.stderr:
        print("container stderr:\n" + result.stderr.decode(errors="replace").rstrip())
    print(f"exit status: {result.exit_status}\n")
    print(result.timeline.render())
    leftovers = sorted(p.name for p in local_vms.glob("*")) if local_vms.exists() else []
    print(f"\npod VMs left after StopVM: {len(leftovers)}")
    if not keep:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0 if result.exit_status == 0 and not leftovers else 1


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="peerpods-demo",
        description="Run one pod through cloud-api-adaptor's local provider, as the Kata shim would.",
    )
    p.add_argument("--keep", action="store_true", help="keep the scratch directory and logs")
    p.add_argument(
        "--no-network", action="store_true",
        help="as root too, skip the pod network part (pod VMs on loopback addresses)",
    )  # fmt: skip
    p.add_argument("command", nargs="*", help=f"container command (default: {' '.join(DEFAULT_COMMAND)!r})")
    args = version.parse_args(p, argv)
    with_network = os.geteuid() == 0 and not args.no_network and not args.command
    if not with_network:
        reason = "--no-network" if args.no_network else "a command was given" if args.command else "not root"
        print(f"pod network part skipped ({reason}): pod VMs on loopback addresses")
    sys.exit(asyncio.run(demo(args.command or DEFAULT_COMMAND, args.keep, with_network)))
