"""Pod VM boot: CreateVM to agent-ready on libvirt, with a breakdown per step.

    python -m bench.boot [--runs 5] [--domain-type kvm|qemu] [--boot direct|firmware]

Runs the end-to-end stack of tests/e2e (libvirtd, the cached pod VM image's volumes in a scratch
pool, `cloud-api-adaptor libvirt` with user-mode networking) and starts pods one after another.
`--boot direct` (the default) boots the kernel and initrd published with the image, `firmware` boots
OVMF and the unified kernel image on the disk. Agent-ready is the first Health.Check answered
through the tunnel. The steps come from the host's clock and the `peerpods-boot: <step> uptime=<s>`
marks the image prints on the serial console (`userspace` when systemd starts its first units; for
a unit, when systemd saw it become active: a Type=notify service's READY=1):

    define and start      CreateVM sent -> domain running (volumes, cidata, define, QEMU start)
    firmware              domain running -> kernel start (OVMF, or SeaBIOS loading the kernel)
    kernel and initrd     kernel start -> systemd's first unit (`userspace` mark)
    user data             -> process-user-data done (config drive mounted, files written)
    agent and forwarder   -> agent-protocol-forwarder listening (its READY=1)
    tunnel up             -> StartVM returns: what the adaptor's dial loop adds after the
                             forwarder listens, plus the TLS handshake
    health                -> Health.Check answered (through the forwarder to the agent)

Guest times are guest uptimes placed on the host clock by the `userspace` mark (host time read
minus its uptime). Also printed: the QEMU process's CPU time to agent-ready, which depends less
on the other load of the machine than the wall clock, and the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.scratch_space import environment as scratch_environment
from bench.scratch_space import scratch_seconds
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


USER_DATA_MARK = "process-user-data"
FORWARDER_MARK = "agent-protocol-forwarder"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Boot:
    steps: dict[str, float]
    total: float
    qemu_cpu: float
    scratch: float | None = None  # the encrypted scratch space's unit (--scratch-space)


def breakdown(sent: float, running: float, marks: dict[str, tuple[float, float]], started: float,
              ready: float) -> dict[str, float]:  # fmt: skip
    """Seconds per step from host times and the console marks (host time read, guest uptime)."""
    userspace_at, userspace_uptime = marks["userspace"]
    kernel_start = userspace_at - userspace_uptime
    user_data = marks[USER_DATA_MARK][1]
    forwarder = marks[FORWARDER_MARK][1]
    return {
        "define and start": running - sent,
        "firmware": kernel_start - running,
        "kernel and initrd": userspace_uptime,
        "user data": user_data - userspace_uptime,
        "agent and forwarder": forwarder - user_data,
        "tunnel up": started - (kernel_start + forwarder),
        "health": ready - started,
    }


def qemu_cpu_seconds(domain_name: str) -> float:
    """User + system CPU time of the QEMU process running `domain_name` (0 if it is not found)."""
    guest = f"guest={domain_name},".encode()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            words = cmdline.read_bytes().split(b"\0")
            if b"qemu-system" in words[0] and any(word.startswith(guest) for word in words):
                fields = (cmdline.parent / "stat").read_text().rsplit(")", 1)[1].split()
                return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        except (OSError, IndexError, ValueError):
            continue
    return 0.0


# On the kernel command line (--cmdline-extra), the image prints a boot profile once the pod VM is
# ready (peerpods-boot-profile.service): the VM is kept until it has.
PROFILE_PARAMETER = "peerpods.boot_profile"


async def one_boot(
    adaptor: LibvirtAdaptor,
    watcher: ConsoleWatcher,
    index: int,
    console_dir: Path | None = None,
    profile: bool = False,
) -> Boot:
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
        cpu = qemu_cpu_seconds(console.domain_name)
        for mark in (USER_DATA_MARK, FORWARDER_MARK):
            await _wait_for_mark(console, mark)
        if profile:
            await _wait_for_mark(console, "profile-done", timeout=600)
        steps = breakdown(sent, watcher.defined_at[sandbox_id], console.marks(), started, ready)
    finally:
        seen = watcher.consoles.get(sandbox_id)
        if console_dir is not None and seen is not None:  # also when the boot failed
            lines = [f"{line.at - sent:8.3f} {line.text}" for line in seen.lines]
            (console_dir / f"console-{index + 1}.log").write_text("\n".join(lines) + "\n")
        await hypervisor.stop_vm(sandbox_id)
    return Boot(steps, ready - sent, cpu, scratch_seconds(line.text for line in console.lines))


async def _wait_for_mark(console: Console, step: str, timeout: float = 10.0) -> None:
    """The console reader may still be a line behind the tunnel."""
    deadline = time.monotonic() + timeout
    while step not in console.marks():
        if time.monotonic() > deadline:
            raise RuntimeError(f"no '{step}' mark on the console:\n{console.text()}")
        await asyncio.sleep(0.05)


def report(boots: list[Boot], domain_type: str, boot: str, load: tuple[float, float]) -> str:
    def row(name: str, values: list[float]) -> str:
        return f"{name:<22} {statistics.median(values):>8.2f} {min(values):>8.2f} {max(values):>8.2f}"

    lines = [
        f"pod VM boot, CreateVM -> agent ready, {len(boots)} runs, libvirt domain type {domain_type}, "
        f"{boot} boot, load average {load[0]:.1f} before, {load[1]:.1f} after",
        f"{'step (s)':<22} {'p50':>8} {'min':>8} {'max':>8}",
    ]
    lines += [row(step, [b.steps[step] for b in boots]) for step in STEPS]
    lines.append(row("total", [b.total for b in boots]))
    lines.append(row("QEMU CPU time", [b.qemu_cpu for b in boots]))
    scratch = [b.scratch for b in boots if b.scratch is not None]
    if scratch:
        share = statistics.median(scratch) / statistics.median([b.total for b in boots])
        lines.append(row("scratch encryption", scratch) + f"  ({share:.1%} of the total, in agent step)")
    return "\n".join(lines)


async def run(
    runs: int,
    domain_type: str,
    boot: str,
    console_dir: Path | None = None,
    cmdline_extra: str = "",
    scratch_gib: int = 0,
) -> str:
    image = build(ImageConfig(cache_dir=default_cache_dir(), mirror=host_mirror()))
    run_id = new_run_id()
    owner = f"bench-{run_id}"
    load_before = os.getloadavg()[0]
    with kvm_group_access(), LibvirtDaemon(), scratch_dir(run_id) as directory:
        pool = ScratchPool.create(run_id, image)
        try:
            env = adaptor_env(pool, domain_type, direct_boot=boot == "direct", PROXY_TIMEOUT="20m")
            if cmdline_extra:
                env["LIBVIRT_KERNEL_CMDLINE"] += f" {cmdline_extra}"
            env.update(scratch_environment(scratch_gib))
            adaptor = LibvirtAdaptor(directory, owner, env)
            await adaptor.start()
            try:
                with ConsoleWatcher(owner) as watcher:
                    boots = []
                    for index in range(runs):
                        profile = PROFILE_PARAMETER in cmdline_extra.split()
                        boots.append(await one_boot(adaptor, watcher, index, console_dir, profile))
                        print(f"run {index + 1}: {boots[-1].total:.2f}s", file=sys.stderr)
            finally:
                await adaptor.stop()
        finally:
            pool.remove()
    return report(boots, domain_type, boot, (load_before, os.getloadavg()[0]))


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
    parser.add_argument(
        "--boot",
        choices=("direct", "firmware"),
        default="direct",
        help="direct: the image's published kernel and initrd; firmware: OVMF and the disk's UKI",
    )
    parser.add_argument(
        "--console-dir",
        type=Path,
        default=None,
        help="write each pod VM's serial console there, each line with its time since CreateVM",
    )
    parser.add_argument(
        "--cmdline-extra",
        default="",
        help="kernel parameters added for a direct boot: e.g. 'loglevel=6 printk.time=1' shows where "
        f"the kernel's time goes on the console, '{PROFILE_PARAMETER}' makes the pod VM print systemd's "
        "critical chains and Python import times there once it is ready (see --console-dir)",
    )
    parser.add_argument(
        "--scratch-space",
        type=int,
        default=0,
        metavar="GIB",
        help="ENABLE_SCRATCH_SPACE with a disk of GIB GiB: reports what encrypting it adds",
    )
    args = parser.parse_args()
    problem = tool_problem() or (kvm_problem() if args.domain_type == "kvm" else None)
    if problem is not None:
        sys.exit(f"bench.boot: cannot run: {problem}")
    boots = run(
        args.runs, args.domain_type, args.boot, args.console_dir, args.cmdline_extra, args.scratch_space
    )
    print(asyncio.run(boots))


if __name__ == "__main__":
    main()
