"""Worker side of the pod network: read the pod's network namespace at CreateVM, splice it to a
VXLAN tunnel towards the pod VM at StartVM, and undo that at StopVM (upstream's order).

The pod keeps the IP and MAC its CNI gave it: frames leaving its veth are redirected into the
tunnel and frames from the tunnel out of the veth, so Services, policies and kube-proxy still see
the pod on this node while its processes run in the pod VM. All calls block (netlink and the
iptables command): the sandbox manager runs them in a worker thread.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence

from pyroute2 import IPRoute

from adaptor.netsettings import PodNetworkConfig
from protocols.podnet import notrack
from protocols.podnet.config import PodNetwork, PodNetworkError, Route
from protocols.podnet.netlink import (
    NetnsError,
    NetnsGone,
    VxlanParams,
    delete_link,
    has_redirect,
    index_of,
    ipv4_interfaces,
    link_facts,
    main_routes,
    namespace,
    permanent_neighbors,
    primary_interface,
    redirect,
    remove_redirect,
    vxlan_into,
    vxlan_params,
)

log = logging.getLogger(__name__)

POD_TUNNEL_INTERFACE = "vxlan1"


def inspect(netns_path: str, settings: PodNetworkConfig, index: int) -> PodNetwork:
    """The `pod-network` object for the pod whose namespace is at `netns_path`; the tunnel gets
    VNI `vxlan_min_id + index`. Raises NetnsError with what is wrong (no default route, not
    exactly one IPv4 on the pod's interface, ...)."""
    with namespace(None) as host:
        primary = primary_interface(host)
        host_name = settings.host_interface or primary.name
        host_index = index_of(host, host_name)
        if host_index is None:
            raise NetnsError(f"failed to find host interface {host_name!r}")
        worker_ips = ipv4_interfaces(host, host_index)
        if not worker_ips:
            raise NetnsError(f"failed to get IP address on {host_name}")
        if len(worker_ips) > 1:
            log.info("more than one IPv4 on %s (%s): using %s", host_name, worker_ips, worker_ips[0])
    with namespace(netns_path) as pod:
        pod_primary = primary_interface(pod)
        pod_ips = ipv4_interfaces(pod, pod_primary.index)
        if len(pod_ips) != 1:
            raise NetnsError(
                f"pod interface {pod_primary.name} in {netns_path} has {len(pod_ips)} IPv4 addresses, "
                "exactly one is supported"
            )
        mac, mtu = link_facts(pod, pod_primary.index)
        routes = main_routes(pod)
        neighbors = permanent_neighbors(pod, pod_primary.index)
    gateway, device = pod_primary.gateway, pod_primary.name
    routes += [Route(dst=cidr, gw=gateway, dev=device) for cidr in settings.pod_subnet_cidrs]
    try:
        return PodNetwork(
            pod_ip=pod_ips[0],
            pod_hw_addr=mac,
            interface=pod_primary.name,
            worker_node_ip=worker_ips[0],
            tunnel_type=settings.tunnel_type,
            routes=tuple(routes),
            neighbors=tuple(neighbors),
            mtu=mtu,
            index=index,
            vxlan_port=settings.vxlan_port,
            vxlan_id=settings.vxlan_min_id + index,
            dedicated=bool(settings.host_interface) and settings.host_interface != primary.name,
            external_net_via_pod_vm=settings.external_network_via_podvm,
        )
    except PodNetworkError as exc:
        raise NetnsError(str(exc)) from None


def tunnel_peer(network: PodNetwork, vm_ips: Sequence[str]) -> ipaddress.IPv4Address:
    """The pod VM address the tunnel targets: its first IP, its second with a dedicated interface."""
    wanted = 1 if network.dedicated else 0
    if len(vm_ips) <= wanted:
        raise NetnsError(f"the pod VM has {len(vm_ips)} IP addresses; the tunnel needs address #{wanted + 1}")
    return ipaddress.IPv4Address(vm_ips[wanted])


def setup(netns_path: str, network: PodNetwork, peer: ipaddress.IPv4Address) -> None:
    """NOTRACK rules, then the VXLAN device as vxlan1 in the pod's namespace with its UDP socket in
    this one, and the pod's interface spliced to it both ways. Whatever a previous attempt left in
    the pod's namespace is removed first."""
    notrack.add(peer, network.vxlan_port, network.vxlan_id)
    with namespace(None) as host, namespace(netns_path) as pod:
        pod_if = index_of(pod, network.interface)
        if pod_if is None:
            raise NetnsError(f"pod interface {network.interface} missing in {netns_path}")
        _clean_pod_side(pod, pod_if)
        params = VxlanParams(network.vxlan_id, peer, network.vxlan_port)
        tunnel = vxlan_into(host, pod, netns_path, POD_TUNNEL_INTERFACE, params)
        pod.link("set", index=tunnel, state="up")
        redirect(pod, pod_if, tunnel)
        redirect(pod, tunnel, pod_if)


def _clean_pod_side(pod: IPRoute, pod_if: int | None) -> None:
    """Redirects and vxlan1 out of a pod namespace, looked up first (a qdisc or link delete waits
    for an RCU grace period, so nothing is deleted that is not there)."""
    tunnel = index_of(pod, POD_TUNNEL_INTERFACE)
    for index in (pod_if, tunnel):
        if index is not None and has_redirect(pod, index):
            remove_redirect(pod, index)
    if tunnel is not None and vxlan_params(pod, tunnel):
        delete_link(pod, tunnel)


def teardown_pod_side(netns_path: str, network: PodNetwork) -> None:
    """Redirects and vxlan1 out of the pod's namespace; a namespace already gone is fine."""
    try:
        with namespace(netns_path) as pod:
            _clean_pod_side(pod, index_of(pod, network.interface))
    except NetnsGone:
        log.info("pod network namespace %s is already gone", netns_path)


def teardown(netns_path: str, network: PodNetwork, peer: ipaddress.IPv4Address | None) -> None:
    """Undo `setup` in upstream's order. The NOTRACK rules are removed from the values kept with
    the sandbox, so they do not leak when the CNI deleted the pod's namespace first."""
    if peer is None:
        teardown_pod_side(netns_path, network)
        return
    with notrack.removed_meanwhile(peer, network.vxlan_port, network.vxlan_id):
        teardown_pod_side(netns_path, network)
