"""Networks for `local` pod VMs when the adaptor runs as root: each pod VM gets a network namespace
of its own (its "VM host"), joined by a veth to a bridge in the adaptor's namespace, and a `podns`
beside it, so the pod network tunnel runs exactly as between a worker and a cloud VM.

Without root the local provider keeps pod VMs on loopback addresses and no pod network.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from pyroute2.netlink.exceptions import NetlinkError

from protocols.podnet.netlink import (
    NETNS_DIR,
    NetnsError,
    create_namespaces,
    index_of,
    namespace,
    remove_namespaces,
)

BRIDGE = "ppbr0"
# One file per address in use: adaptors sharing the bridge (tests, a restarted one) claim with O_EXCL.
CLAIMS_DIR = Path("/run/peerpod/local-net")
DEFAULT_SUBNET = "10.251.0.0/24"


def unavailable_reason() -> str:
    """Empty when namespaces can be made here, else why not."""
    if os.geteuid() != 0:
        return "not running as root"
    return ""


class LocalNetwork:
    """The bridge and per-VM namespaces; every call blocks (run it in a worker thread)."""

    def __init__(self, subnet: ipaddress.IPv4Network) -> None:
        self.subnet = subnet
        self.gateway = next(subnet.hosts())

    def ensure_bridge(self) -> None:
        """The bridge with the subnet's first address in this namespace (kept across restarts)."""
        with namespace(None) as host:
            if index_of(host, BRIDGE) is None:
                host.link("add", ifname=BRIDGE, kind="bridge")
            bridge = index_of(host, BRIDGE)
            addresses = {a.get_attr("IFA_ADDRESS") for a in host.get_addr(family=2, index=bridge)}
            if str(self.gateway) not in addresses:
                host.addr("add", index=bridge, address=str(self.gateway), prefixlen=self.subnet.prefixlen)
            host.link("set", index=bridge, state="up")

    def claim_address(self, instance_id: str) -> ipaddress.IPv4Address:
        """The first address of the subnet no other local pod VM on this bridge holds."""
        CLAIMS_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
        for address in self.subnet.hosts():
            if address == self.gateway:
                continue
            try:
                claim = os.open(CLAIMS_DIR / str(address), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            with os.fdopen(claim, "w") as file:
                file.write(instance_id)
            return address
        raise NetnsError(f"no free address for a local pod VM in {self.subnet}")

    @staticmethod
    def vm_namespace(instance_id: str) -> str:
        return f"ppvm-{instance_id}"

    @classmethod
    def podns(cls, instance_id: str) -> str:
        return f"{cls.vm_namespace(instance_id)}-podns"

    def create_vm(self, instance_id: str, address: ipaddress.IPv4Address) -> None:
        """The VM's namespace with `eth0` at `address` (default route via the bridge) and its podns."""
        vm_ns, podns = self.vm_namespace(instance_id), self.podns(instance_id)
        host_side = f"pv{instance_id[-8:]}"
        try:
            create_namespaces(vm_ns, podns)
            with namespace(None) as host:
                host.link("add", ifname=host_side, kind="veth", peer={"ifname": f"{host_side}p"})
                peer = index_of(host, f"{host_side}p")
                host.link("set", index=peer, net_ns_fd=str(NETNS_DIR / vm_ns))
                host.link("set", index=index_of(host, host_side), master=index_of(host, BRIDGE), state="up")
            for name in (vm_ns, podns):
                with namespace(str(NETNS_DIR / name)) as inside:
                    inside.link("set", index=index_of(inside, "lo"), state="up")
            with namespace(str(NETNS_DIR / vm_ns)) as vm:
                eth0 = index_of(vm, f"{host_side}p")
                vm.link("set", index=eth0, ifname="eth0")
                vm.addr("add", index=eth0, address=str(address), prefixlen=self.subnet.prefixlen)
                vm.link("set", index=eth0, state="up")
                vm.route("add", dst="0.0.0.0/0", gateway=str(self.gateway))
        except (NetlinkError, OSError) as exc:
            self._remove_namespaces(instance_id)
            raise NetnsError(f"cannot make the network of local pod VM {instance_id}: {exc}") from None

    def delete_vm(self, instance_id: str, address: str) -> None:
        """Both namespaces go (the veth dies with its end in the VM's namespace), and the address is
        free again; absent is fine."""
        self._remove_namespaces(instance_id)
        claim = CLAIMS_DIR / address
        if claim.exists() and claim.read_text() == instance_id:
            claim.unlink()

    def _remove_namespaces(self, instance_id: str) -> None:
        remove_namespaces(self.podns(instance_id), self.vm_namespace(instance_id))
