"""`peerpods-demo`: a whole pod lifecycle on the embedded `local` provider, with a timeline.

It starts `cloud-api-adaptor local` in a scratch directory, drives it exactly as the Kata shim
would, prints what the container wrote and how long each step took, then checks that stopping
the pod left no pod VM behind.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from protocols import version
from protocols.ttrpc.client import Client
from shimdriver.driver import HypervisorClient, run_pod

DEFAULT_COMMAND = ["sh", "-c", "echo hello from a peer pod; uname -sr"]


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


async def demo(command: list[str], keep: bool) -> int:
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
            stdout=log, stderr=log,
        )  # fmt: skip
        try:
            await wait_for_socket(socket, adaptor)
            hypervisor = HypervisorClient(socket)
            print(f"cloud-api-adaptor {await hypervisor.version()} is serving {socket}")
            result = await run_pod(hypervisor, secrets.token_hex(32), command)
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
    p.add_argument("command", nargs="*", help=f"container command (default: {' '.join(DEFAULT_COMMAND)!r})")
    args = version.parse_args(p, argv)
    sys.exit(asyncio.run(demo(args.command or DEFAULT_COMMAND, args.keep)))
