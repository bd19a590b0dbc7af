"""NOTRACK rules for tunnel traffic in the `raw` table, with upstream's chains and comments.

VXLAN's source ports are random while its destination port is fixed, so without these rules every
packet looks like a new conntrack flow and fills the table. Rules go through the `iptables` command
(whichever backend the distribution selects, nf_tables on current ones), as upstream's go-iptables
does: the Python bindings to libiptc only drive the legacy backend, whose rules an nf_tables system
does not apply.
"""

from __future__ import annotations

import ipaddress
import subprocess
import threading

CHAINS = {"OUTPUT": "-d", "PREROUTING": "-s"}  # built-in chain -> how the peer address is matched
_lock = threading.Lock()  # iptables' own lock is per call; our check-then-add spans several calls


class IptablesError(RuntimeError):
    """The iptables command failed; carries its message."""


def _iptables(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(
            ["iptables", "-w", "5", "-t", "raw", *args], capture_output=True, text=True, timeout=30
        )
    except FileNotFoundError:
        raise IptablesError("the iptables command is not installed") from None
    if check and result.returncode != 0:
        raise IptablesError(f"iptables -t raw {' '.join(args)}: {result.stderr.strip()}")
    return result


def _rule(builtin: str, peer: ipaddress.IPv4Address, port: int, vni: int) -> list[str]:
    return [
        f"peerpod-{builtin}", "-m", "comment", "--comment", f"peerpod [vni:{vni}]",
        CHAINS[builtin], str(peer), "-p", "udp", "-m", "udp", "--dport", str(port), "-j", "NOTRACK",
    ]  # fmt: skip


def add(peer: ipaddress.IPv4Address, port: int, vni: int) -> None:
    """Untracked UDP to and from the tunnel's peer on the VXLAN port (idempotent)."""
    with _lock:
        for builtin in CHAINS:
            chain = f"peerpod-{builtin}"
            if _iptables("-n", "-L", chain, check=False).returncode != 0:
                _iptables("-N", chain)
            if _iptables("-C", builtin, "-j", chain, check=False).returncode != 0:
                _iptables("-A", builtin, "-j", chain)
            rule = _rule(builtin, peer, port, vni)
            if _iptables("-C", *rule, check=False).returncode != 0:
                _iptables("-A", *rule)


def remove(peer: ipaddress.IPv4Address, port: int, vni: int) -> None:
    """Delete this tunnel's rules; a chain left empty goes too, with its jump (absent is fine)."""
    with _lock:
        for builtin in CHAINS:
            chain = f"peerpod-{builtin}"
            rule = _rule(builtin, peer, port, vni)
            while _iptables("-C", *rule, check=False).returncode == 0:
                _iptables("-D", *rule)
            listing = _iptables("-S", chain, check=False)
            if listing.returncode == 0 and listing.stdout.strip() == f"-N {chain}":
                while _iptables("-C", builtin, "-j", chain, check=False).returncode == 0:
                    _iptables("-D", builtin, "-j", chain)
                _iptables("-X", chain)


def rules() -> list[str]:
    """Our rules as `iptables -S` prints them (for tests and diagnostics)."""
    listing = _iptables("-S")
    return [line for line in listing.stdout.splitlines() if "peerpod" in line]
