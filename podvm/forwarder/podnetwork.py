"""Pod VM side of the pod network: before the forwarder listens, give `podns` the pod's identity
(its interface name, MAC, IP, routes and neighbours) on a VXLAN device whose UDP socket stays in the
VM's own namespace, tunnelling to the worker node; undo it on exit.

The order is upstream's, so "the adaptor reached the forwarder" also means "the VM end of the
tunnel is up". All calls block; the forwarder runs them in a worker thread before serving.
"""

from __future__ import annotations

import ipaddress
import logging
import time

from protocols.podnet import notrack
from protocols.podnet.config import NUD_PERMANENT, PodNetwork
from protocols.podnet.netlink import (
    NetnsError,
    VxlanParams,
    delete_link,
    index_of,
    ipv4_interfaces,
    namespace,
    primary_interface,
    vxlan_into,
    vxlan_params,
)

log = logging.getLogger(__name__)

SCOPE_LINK = 253
RTPROT_KERNEL = 2
WAIT_FOR_NETWORK_S = 180.0


def wait_for_primary_ip(host_interface: str = "", timeout_s: float = WAIT_FOR_NETWORK_S) -> None:
    """Poll (1 s) until the VM's primary interface, and `host_interface` if named, hold exactly one
    IPv4 address: cloud-init or DHCP may still be configuring them when the forwarder starts."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with namespace(None) as vm:
                names = [primary_interface(vm).name, *([host_interface] if host_interface else [])]
                counts = {}
                for name in names:
                    index = index_of(vm, name)
                    counts[name] = len(ipv4_interfaces(vm, index)) if index is not None else 0
            if all(count == 1 for count in counts.values()):
                return
            problem = ", ".join(f"{name} has {count} IPv4 addresses" for name, count in counts.items())
        except NetnsError as exc:
            problem = str(exc)
        if time.monotonic() >= deadline:
            raise NetnsError(f"pod VM network not ready after {timeout_s:.0f} s: {problem}")
        time.sleep(1.0)


def setup(network: PodNetwork, podns: str) -> None:
    """Build the VM end of the tunnel in `podns` (a namespace made by netns@podns.service); an end
    left by a killed forwarder is removed first."""
    teardown_interface(network, podns)
    worker = network.worker_node_ip.ip
    notrack.add(worker, network.vxlan_port, network.vxlan_id)
    with namespace(None) as vm, namespace(podns) as pod:
        params = VxlanParams(network.vxlan_id, worker, network.vxlan_port)
        link = vxlan_into(vm, pod, podns, network.interface, params)
        pod.link("set", index=link, address=network.pod_hw_addr, mtu=network.pod_mtu)
        address, prefixlen = str(network.pod_ip.ip), network.pod_ip.network.prefixlen
        pod.addr("add", index=link, address=address, prefixlen=prefixlen)
        pod.link("set", index=link, state="up")
        if prefixlen != 32:
            # The kernel's connected route goes: the route list re-adds it where the CNI had one
            # (flannel, calico), and CNIs that replace it (ptp, GKE) stay mirrored.
            connected = network.pod_ip.network
            pod.route("del", dst=str(connected), oif=link, scope=SCOPE_LINK, proto=RTPROT_KERNEL)
        for route in sorted(network.routes, key=lambda r: r.gw is not None):
            dst = route.dst or ipaddress.IPv4Network("0.0.0.0/0")
            oif = index_of(pod, route.dev) if route.dev else link
            extra: dict[str, str | int] = {"gateway": str(route.gw)} if route.gw else {}
            if route.protocol:
                extra["proto"] = route.protocol
            pod.route(
                "add", dst=str(dst.network_address), dst_len=dst.prefixlen, oif=oif or link,
                scope=route.scope if route.gw else SCOPE_LINK, **extra,
            )  # fmt: skip
        for neighbor in network.neighbors:
            pod.neigh(
                "add", dst=str(neighbor.ip), lladdr=neighbor.hw_addr,
                ifindex=index_of(pod, neighbor.dev) or link, state=NUD_PERMANENT,
            )  # fmt: skip
    log.info(
        "pod network up: %s %s (%s) in %s, VNI %d to %s:%d",
        network.interface, network.pod_ip, network.pod_hw_addr, podns, network.vxlan_id, worker,
        network.vxlan_port,
    )  # fmt: skip


def teardown_interface(network: PodNetwork, podns: str) -> None:
    """Delete the pod's tunnel interface from `podns` if it is there (and is a VXLAN device)."""
    with namespace(podns) as pod:
        index = index_of(pod, network.interface)
        if index is not None and vxlan_params(pod, index) is not None:
            delete_link(pod, index)


def teardown(network: PodNetwork, podns: str) -> None:
    with notrack.removed_meanwhile(network.worker_node_ip.ip, network.vxlan_port, network.vxlan_id):
        teardown_interface(network, podns)
