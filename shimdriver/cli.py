"""`kata-shim-driver`: drive a running cloud-api-adaptor the way the Kata shim does."""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
from pathlib import Path

from protocols import version
from shimdriver.driver import HypervisorClient, run_pod


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="kata-shim-driver",
        description="Create a sandbox, start it, run one container, print its output and timeline, stop it.",
    )
    p.add_argument("--socket", default="/run/peerpod/hypervisor.sock", help="the adaptor's hypervisor socket")
    p.add_argument("--sandbox-id", default="", help="default: a random 64-hex id like containerd's")
    p.add_argument("--pod", default="demo", help="pod name")
    p.add_argument("--namespace", default="default")
    p.add_argument("command", nargs="+", help="container command")
    args = version.parse_args(p, argv)
    hypervisor = HypervisorClient(Path(args.socket))
    sandbox_id = args.sandbox_id or secrets.token_hex(32)
    result = asyncio.run(run_pod(hypervisor, sandbox_id, args.command, args.pod, args.namespace))
    sys.stdout.write(result.stdout.decode(errors="replace"))
    sys.stderr.write(result.stderr.decode(errors="replace"))
    print(result.timeline.render(), file=sys.stderr)
    sys.exit(result.exit_status)
