"""NOTRACK rules for tunnel traffic in the `raw` table, with upstream's chains and comments.

VXLAN's source ports are random while its destination port is fixed, so without these rules every
packet looks like a new conntrack flow and fills the table. Rules go through the iptables commands
(whichever backend the distribution selects, nf_tables on current ones), as upstream's go-iptables
does: the Python bindings to libiptc only drive the legacy backend, whose rules an nf_tables system
does not apply. A change is one read (`iptables -S`) and one atomic `iptables-restore --noflush`,
under a file lock so that processes sharing the table (the adaptor's threads, local pod VMs) never
interleave their read-modify-write.
"""

from __future__ import annotations

import fcntl
import ipaddress
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

CHAINS = {"OUTPUT": "-d", "PREROUTING": "-s"}  # built-in chain -> how the peer address is matched
LOCK_FILE = "/run/peerpod-iptables.lock"
_thread_lock = threading.Lock()


class IptablesError(RuntimeError):
    """An iptables command failed; carries its message."""


def _run(command: list[str], stdin: str = "") -> str:
    try:
        result = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise IptablesError(f"{command[0]} is not installed") from None
    if result.returncode != 0:
        raise IptablesError(f"{' '.join(command)}: {result.stderr.strip()}")
    return result.stdout


@contextmanager
def _locked() -> Iterator[list[str]]:
    """The raw table's rules (`-S` lines), with every other writer of ours kept out meanwhile."""
    with _thread_lock, open(LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield _run(["iptables", "-w", "5", "-t", "raw", "-S"]).splitlines()


def _apply(lines: list[str]) -> None:
    if lines:
        _run(["iptables-restore", "-w", "5", "--noflush"], "*raw\n" + "\n".join(lines) + "\nCOMMIT\n")


def _rule(builtin: str, peer: ipaddress.IPv4Address, port: int, vni: int) -> str:
    """A rule as `iptables -S` prints it, which is also how iptables-restore reads it."""
    return (
        f"-A peerpod-{builtin} {CHAINS[builtin]} {peer}/32 -p udp -m comment "
        f'--comment "peerpod [vni:{vni}]" -m udp --dport {port} -j NOTRACK'
    )


def add(peer: ipaddress.IPv4Address, port: int, vni: int) -> None:
    """Untracked UDP to and from the tunnel's peer on the VXLAN port (idempotent)."""
    with _locked() as current:
        changes = []
        for builtin in CHAINS:
            chain = f"peerpod-{builtin}"
            if f"-N {chain}" not in current:
                changes.append(f":{chain} - [0:0]")
            if f"-A {builtin} -j {chain}" not in current:
                changes.append(f"-A {builtin} -j {chain}")
            if (rule := _rule(builtin, peer, port, vni)) not in current:
                changes.append(rule)
        _apply(changes)


def remove(peer: ipaddress.IPv4Address, port: int, vni: int) -> None:
    """Delete this tunnel's rules; a chain left empty goes too, with its jump (absent is fine)."""
    with _locked() as current:
        changes = []
        for builtin in CHAINS:
            chain = f"peerpod-{builtin}"
            rule = _rule(builtin, peer, port, vni)
            changes += ["-D" + line[2:] for line in current if line == rule]
            left = [line for line in current if line.startswith(f"-A {chain} ") and line != rule]
            if f"-N {chain}" in current and not left:
                changes += ["-D" + line[2:] for line in current if line == f"-A {builtin} -j {chain}"]
                changes.append(f"-X {chain}")
        _apply(changes)


@contextmanager
def removed_meanwhile(peer: ipaddress.IPv4Address, port: int, vni: int) -> Iterator[None]:
    """`remove` in a thread of its own while the caller deletes the tunnel's links: a link delete
    waits for an RCU grace period and the iptables commands need no netlink, so a teardown takes
    the longer of the two, not their sum. The thread starts in the caller's network namespace."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        removal = pool.submit(remove, peer, port, vni)
        yield
        removal.result()
