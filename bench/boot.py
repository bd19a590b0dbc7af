"""Pod VM boot: CreateVM to agent-ready on libvirt, with a breakdown per step.

    python -m bench.boot [--runs 5] [--domain-type kvm|qemu]

Runs the end-to-end stack of tests/e2e (libvirtd, the cached pod VM image as base volume,
`cloud-api-adaptor libvirt` with user-mode networking) and starts pods one after another. Agent-ready
is the first Health.Check answered through the tunnel. The steps come from the host's clock and the
`peerpods-boot: <step> uptime=<s>` marks the image's units print on the serial console:

    define and start      CreateVM sent -> domain running (volumes, cidata, define, QEMU start)
    firmware              domain running -> kernel start (host time of a mark minus its uptime)
    kernel and initrd     kernel start -> systemd's first unit (`userspace` mark)
    user data             -> `user-data` mark (config drive mounted, files written)
    agent and forwarder   -> `forwarder-ready` mark (agent up, forwarder listening)
    tunnel up             -> StartVM returns (the adaptor's TLS dial got through)
    health                -> Health.Check answered
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import sys
import time
from dataclasses import dataclass

from podvm.image.build import build
from podvm.image.config import ImageConfig, default_cache_dir, host_mirror
from shimdriver.driver import AgentClient, shim_annotations
from tests.e2e.stack import (
    Console,
    ConsoleWatcher,
    LibvirtAdaptor,
    LibvirtDaemon,
    ScratchPool,
    adaptor_env,
    kvm_group_access,
    kvm_problem,
    new_run_id,
    scratch_dir,
    tool_problem,
)

STEPS = (
    "define and start",
    "firmware",
    "kernel and initrd",
    "user data",
    "agent and forwarder",
    "tunnel up",
    "health",
)


@dataclass
class Boot:
    steps: dict[str, float]
    total: float


def breakdown(sent: float, running: float, marks: dict[str, tuple[float, float]], started: float,
              ready: float) -> dict[str, float]:  # fmt: skip
    """Seconds per step from host times and the console marks (host time read, guest uptime)."""
    userspace_at, userspace_uptime = marks["userspace"]
    kernel_start = userspace_at - userspace_uptime
    user_data_at = marks["user-data"][0]
    forwarder_at = marks["forwarder-ready"][0]
    return {
        "define and start": running - sent,
        "firmware": kernel_start - running,
        "kernel and initrd": userspace_uptime,
        "user data": user_data_at - userspace_at,
        "agent and forwarder": forwarder_at - user_data_at,
        "tunnel up": started - forwarder_at,
        "health": ready - started,
    }


async def one_boot(adaptor: LibvirtAdaptor, watcher: ConsoleWatcher, index: int) -> Boot:
    sandbox_id = secrets.token_hex(32)
    hypervisor = adaptor.hypervisor
    sent = time.monotonic()
    socket = await hypervisor.create_vm(sandbox_id, shim_annotations(f"boot{index}", "bench"))
    try:
        await hypervisor.start_vm(sandbox_id)
        started = time.monotonic()
        agent = await AgentClient.dial(socket)
        try:
            await agent.check()
        finally:
            await agent.close()
        ready = time.monotonic()
        console = watcher.consoles.get(sandbox_id)
        if console is None:
            raise RuntimeError("the pod VM's console was never attached")
        await _wait_for_mark(console, "forwarder-ready")
        steps = breakdown(sent, watcher.defined_at[sandbox_id], console.marks(), started, ready)
    finally:
        await hypervisor.stop_vm(sandbox_id)
    return Boot(steps, ready - sent)


async def _wait_for_mark(console: Console, step: str, timeout: float = 10.0) -> None:
    """The console reader may still be a line behind the tunnel."""
    deadline = time.monotonic() + timeout
    while step not in console.marks():
        if time.monotonic() > deadline:
            raise RuntimeError(f"no '{step}' mark on the console:\n{console.text()}")
        await asyncio.sleep(0.05)


def report(boots: list[Boot], domain_type: str) -> str:
    def row(name: str, values: list[float]) -> str:
        return f"{name:<22} {statistics.median(values):>8.2f} {min(values):>8.2f} {max(values):>8.2f}"

    lines = [
        f"pod VM boot, CreateVM -> agent ready, {len(boots)} runs, libvirt domain type {domain_type}",
        f"{'step (s)':<22} {'p50':>8} {'min':>8} {'max':>8}",
    ]
    lines += [row(step, [boot.steps[step] for boot in boots]) for step in STEPS]
    lines.append(row("total", [boot.total for boot in boots]))
    return "\n".join(lines)


async def run(runs: int, domain_type: str) -> str:
    image = build(ImageConfig(cache_dir=default_cache_dir(), mirror=host_mirror()))
    run_id = new_run_id()
    owner = f"bench-{run_id}"
    with kvm_group_access(), LibvirtDaemon(), scratch_dir(run_id) as directory:
        pool = ScratchPool.create(run_id, image.qcow2)
        try:
            adaptor = LibvirtAdaptor(directory, owner, adaptor_env(pool, domain_type, PROXY_TIMEOUT="20m"))
            await adaptor.start()
            try:
                with ConsoleWatcher(owner) as watcher:
                    boots = []
                    for index in range(runs):
                        boots.append(await one_boot(adaptor, watcher, index))
                        print(f"run {index + 1}: {boots[-1].total:.2f}s", file=sys.stderr)
            finally:
                await adaptor.stop()
        finally:
            pool.remove()
    return report(boots, domain_type)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--domain-type",
        choices=("kvm", "qemu"),
        default="kvm",
        help="qemu: TCG emulation (needs the provider's LIBVIRT_DOMAIN_TYPE setting)",
    )
    args = parser.parse_args()
    problem = tool_problem() or (kvm_problem() if args.domain_type == "kvm" else None)
    if problem is not None:
        sys.exit(f"bench.boot: cannot run: {problem}")
    print(asyncio.run(run(args.runs, args.domain_type)))


if __name__ == "__main__":
    main()
