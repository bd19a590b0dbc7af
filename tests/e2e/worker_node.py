"""A worker node for the pod network end to end: a network namespace the test makes, holding a
libvirtd of its own, the libvirt network that its pod VMs join, and CNI-like pod namespaces.

Why libvirtd runs inside the namespace rather than the VMs joining a bridge on the host: the libvirt
provider, like upstream's, learns a pod VM's address from the DHCP leases of its libvirt network
(the image has no guest agent), and a libvirt network's bridge, the bridge's address and its DHCP
server (dnsmasq) live in the network namespace of the libvirtd that starts them. So the host gets
no bridge, no address and no DHCP server, its firewall and br_netfilter never see the traffic, and
the provider runs exactly as configured on a real host (`LIBVIRT_NET`). The daemon has a private
mount namespace with its own /run/libvirt, /var/lib/libvirt and /etc/libvirt (so it coexists with
the host's libvirtd, whose autostarted networks stay out) and its socket in a test directory, which
the adaptor, run in the same network namespace, reaches as `qemu:///system?socket=...`.

Inside namespace `<prefix>-worker`:

    <prefix>-br  10.10.0.1/24   libvirt network (forward mode "open": libvirt adds no firewall
                                rules), DHCP .100-.199 to the pod VMs' NICs; the worker's default
                                route, so its primary interface (apf.json's worker-node-ip) is the
                                one the VMs reach
    cni0         10.128.0.1/24  CNI-like bridge; pod namespaces <prefix>-pod<i>, eth0 10.128.0.(2+i)
"""

from __future__ import annotations

import contextlib
import ipaddress
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.stack import NVRAM_DIR, ScratchPool, connect, terminate, wait_for_libvirtd
from tests.podnet.topology import Topology, in_ns

WORKER = ipaddress.IPv4Interface("10.10.0.1/24")
DHCP_RANGE = (ipaddress.IPv4Address("10.10.0.100"), ipaddress.IPv4Address("10.10.0.199"))
CNI_GATEWAY = ipaddress.IPv4Interface("10.128.0.1/24")
TOOLS = ("ip", "iptables", "unshare", "dnsmasq")


def podnet_problem() -> str | None:
    """Why the pod network end to end cannot run here (beyond the end-to-end test's own needs)."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing tools: {', '.join(missing)} (dnsmasq: Debian package dnsmasq-base)"
    return None


def network_xml(name: str, bridge: str) -> str:
    """An "open" libvirt network: a bridge with the worker's address and DHCP, no NAT, no rules."""
    return (
        f"<network><name>{name}</name><forward mode='open'/>"
        f"<bridge name='{bridge}' stp='off' delay='0'/><dns enable='no'/>"
        f"<ip address='{WORKER.ip}' netmask='{WORKER.netmask}'>"
        f"<dhcp><range start='{DHCP_RANGE[0]}' end='{DHCP_RANGE[1]}'/></dhcp></ip></network>"
    )


@dataclass
class NetnsLibvirtd:
    """libvirtd of its own in network namespace `netns`, its files under `directory`."""

    netns: str
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.directory / "sock" / "libvirt-sock"

    @property
    def uri(self) -> str:
        return f"qemu:///system?socket={self.socket}"

    @property
    def log(self) -> Path:
        return self.directory / "libvirtd.log"

    @property
    def nvram_dir(self) -> Path:
        """Its NVRAM directory, seen from the host through its mount namespace's root."""
        assert self.process is not None
        return Path(f"/proc/{self.process.pid}/root") / NVRAM_DIR.relative_to("/")

    def __enter__(self) -> NetnsLibvirtd:
        etc = self.directory / "etc"
        etc.mkdir(parents=True)
        self.socket.parent.mkdir()
        (etc / "libvirtd.conf").write_text(f'unix_sock_dir = "{self.socket.parent}"\n')
        # QEMU's output to files: virtlogd's socket would be in the private /run/libvirt.
        (etc / "qemu.conf").write_text('stdio_handler = "file"\n')
        pid_file = self.directory / "libvirtd.pid"
        script = (
            "mkdir -p /run/libvirt /var/lib/libvirt"
            " && mount -t tmpfs -o mode=0755 tmpfs /run/libvirt"
            " && mount -t tmpfs -o mode=0755 tmpfs /var/lib/libvirt"
            f" && mount --bind {shlex.quote(str(etc))} /etc/libvirt"
            f" && exec libvirtd -f /etc/libvirt/libvirtd.conf -p {shlex.quote(str(pid_file))}"
        )
        command = ["ip", "netns", "exec", self.netns, "unshare", "--mount", "--propagation", "private"]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [*command, "sh", "-c", script],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        if not wait_for_libvirtd(self.uri, [self.process]):
            self.__exit__()
            raise RuntimeError(f"libvirtd in {self.netns} did not start:\n{self.log.read_text()[-3000:]}")
        return self

    def __exit__(self, *exc: object) -> None:
        """Domains a failed test left, and networks, first: libvirtd leaves both running when it
        exits (QEMU and dnsmasq would outlive it). Every one is this test's: the daemon is private."""
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(Exception):
                conn = connect(self.uri)
                try:
                    for running in [*conn.listAllDomains(0), *conn.listAllNetworks(0)]:
                        with contextlib.suppress(Exception):
                            running.destroy()
                finally:
                    conn.close()
            terminate(self.process)


@dataclass
class WorkerNode:
    net: Topology  # the worker namespace and its pods
    libvirtd: NetnsLibvirtd
    network: str  # the libvirt network, for LIBVIRT_NET
    bridge: str

    def leases(self) -> list[ipaddress.IPv4Address]:
        """The addresses the network's DHCP server gave out, from libvirt's lease records."""
        conn = connect(self.libvirtd.uri)
        try:
            leases = conn.networkLookupByName(self.network).DHCPLeases()
        finally:
            conn.close()
        return [ipaddress.IPv4Address(lease["ipaddr"]) for lease in leases]


@contextlib.contextmanager
def worker_node(run_id: str, directory: Path, pool: ScratchPool, pods: int) -> Iterator[WorkerNode]:
    """The worker namespace with `pods` pod namespaces and libvirtd serving `pool` and the network;
    everything removed afterwards."""
    prefix = f"pp{run_id[:6]}"
    net = Topology(prefix=prefix, worker=f"{prefix}-worker", worker_ip=str(WORKER.ip))
    try:
        net.add_ns(net.worker)
        in_ns(net.worker, "ip", "link", "add", "cni0", "type", "bridge")
        in_ns(net.worker, "ip", "addr", "add", str(CNI_GATEWAY), "dev", "cni0")
        in_ns(net.worker, "ip", "link", "set", "cni0", "up")
        for index in range(pods):
            net.add_pod(index)
        with NetnsLibvirtd(net.worker, directory / "libvirt") as libvirtd:
            pool.share_with(libvirtd.uri)
            node = WorkerNode(net, libvirtd, f"{prefix}-pods", f"{prefix}-br")
            conn = connect(libvirtd.uri)
            try:
                conn.networkCreateXML(network_xml(node.network, node.bridge))
            finally:
                conn.close()
            in_ns(net.worker, "ip", "route", "add", "default", "dev", node.bridge)
            yield node
    finally:
        net.remove()
