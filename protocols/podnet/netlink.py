"""The netlink steps both ends of the pod network tunnel share, over pyroute2's blocking API.

Callers run these in a worker thread (pyroute2's blocking calls drive an event loop of their own).
Namespaces are entered with `flags=0`: pyroute2's default creates a missing namespace, and a typo'd
or already deleted pod netns must be an error, not a new empty namespace.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2 import netns as pyroute2_netns
from pyroute2.netlink.exceptions import NetlinkError

from protocols.podnet.config import NUD_PERMANENT, ROUTE_PROTOCOLS, Neighbor, Route

MAIN_TABLE = 254
RTN_UNICAST = 1
ETH_P_ALL = 0x0003
INGRESS_PARENT = 0xFFFF0000
EEXIST = 17


class NetnsError(RuntimeError):
    """A network namespace or link the tunnel needs is missing or refused an operation."""


class NetnsGone(NetnsError):
    """The namespace no longer exists (the CNI deleted it, or the path was wrong)."""


@contextmanager
def namespace(path: str | None) -> Iterator[IPRoute]:
    """A netlink socket in the namespace at `path` (None: this thread's own), never creating one.

    The socket is opened with this thread briefly inside that namespace (a socket stays in the
    namespace it was made in): about 1 ms, where pyroute2's own `netns=` spawns a helper (~100 ms).
    """
    if path is None:
        ipr = IPRoute()
    else:
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            try:
                pyroute2_netns.setns(path, flags=0)
            except FileNotFoundError:
                raise NetnsGone(f"network namespace {path} does not exist") from None
            except OSError as exc:
                raise NetnsError(f"cannot enter network namespace {path}: {exc.strerror}") from None
            try:
                ipr = IPRoute()
            finally:
                pyroute2_netns.setns(own, flags=0)
        finally:
            os.close(own)
    try:
        yield ipr
    finally:
        ipr.close()


NETNS_DIR = Path("/run/netns")  # where `ip netns` and pyroute2 keep named namespaces


def create_namespaces(*names: str) -> None:
    """Named network namespaces (made the way `ip netns add` makes them)."""
    for name in names:
        pyroute2_netns.create(name)


def remove_namespaces(*names: str) -> None:
    """Named network namespaces gone (their links with them); absent ones are fine."""
    for name in names:
        if (NETNS_DIR / name).exists():
            pyroute2_netns.remove(name)


def enter_namespace(path: str) -> None:
    """Move the calling thread (a child's preexec_fn: the whole child) into the namespace at `path`."""
    pyroute2_netns.setns(path, flags=0)


@dataclass(frozen=True)
class PrimaryInterface:
    index: int
    name: str
    gateway: ipaddress.IPv4Address | None


def _suffix_key(name: str) -> tuple[str, int]:
    """ens0 before ens1 (and ens2 before ens10) when default routes tie on priority."""
    match = re.fullmatch(r"(.*?)(\d+)", name)
    return (match.group(1), int(match.group(2))) if match else (name, -1)


def link_name(ipr: IPRoute, index: int) -> str:
    links = ipr.get_links(index)
    if not links:
        raise NetnsError(f"no link with index {index}")
    return str(links[0].get_attr("IFLA_IFNAME"))


def primary_interface(ipr: IPRoute) -> PrimaryInterface:
    """The interface of the main table's default route with the lowest priority (upstream's rule)."""
    candidates = []
    for route in ipr.get_routes(family=2, table=MAIN_TABLE):
        if route["dst_len"] != 0 or route.get_attr("RTA_OIF") is None:
            continue
        index = int(route.get_attr("RTA_OIF"))
        gateway = route.get_attr("RTA_GATEWAY")
        name = link_name(ipr, index)
        candidates.append((route.get_attr("RTA_PRIORITY") or 0, _suffix_key(name), index, name, gateway))
    if not candidates:
        raise NetnsError("failed to identify primary interface: no default route")
    _, _, index, name, gateway = min(candidates)
    return PrimaryInterface(index, name, ipaddress.IPv4Address(gateway) if gateway else None)


def ipv4_interfaces(ipr: IPRoute, index: int) -> list[ipaddress.IPv4Interface]:
    return [
        ipaddress.IPv4Interface(f"{addr.get_attr('IFA_ADDRESS')}/{addr['prefixlen']}")
        for addr in ipr.get_addr(family=2, index=index)
    ]


def link_facts(ipr: IPRoute, index: int) -> tuple[str, int]:
    """MAC address (lower case) and MTU of a link."""
    link = ipr.get_links(index)[0]
    return str(link.get_attr("IFLA_ADDRESS")).lower(), int(link.get_attr("IFLA_MTU"))


def main_routes(ipr: IPRoute) -> list[Route]:
    """Unicast routes of the main table made by static/boot/dhcp/kernel, in upstream's order."""
    protocols = set(ROUTE_PROTOCOLS.values())
    routes = []
    for entry in ipr.get_routes(family=2, table=MAIN_TABLE):
        if entry["type"] != RTN_UNICAST or entry["proto"] not in protocols:
            continue
        dst = entry.get_attr("RTA_DST")
        gateway = entry.get_attr("RTA_GATEWAY")
        oif = entry.get_attr("RTA_OIF")
        routes.append(
            Route(
                dst=ipaddress.IPv4Network(f"{dst or '0.0.0.0'}/{entry['dst_len']}"),
                gw=ipaddress.IPv4Address(gateway) if gateway else None,
                dev=link_name(ipr, oif) if oif else "",
                protocol=entry["proto"],
                scope=entry["scope"],
            )
        )
    return sorted(routes, key=Route.sort_key)


def permanent_neighbors(ipr: IPRoute, index: int) -> list[Neighbor]:
    name = link_name(ipr, index)
    return [
        Neighbor(
            ip=ipaddress.IPv4Address(entry.get_attr("NDA_DST")),
            hw_addr=str(entry.get_attr("NDA_LLADDR")).lower(),
            dev=name,
            state=NUD_PERMANENT,
        )
        for entry in ipr.get_neighbours(family=2, ifindex=index)
        if entry["state"] & NUD_PERMANENT and entry.get_attr("NDA_LLADDR")
    ]


def index_of(ipr: IPRoute, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return int(found[0]) if found else None


def vxlan_into(here: IPRoute, target: IPRoute, target_path: str, name: str, params: VxlanParams) -> int:
    """A VXLAN device named `name` inside the namespace at `target_path` whose UDP socket lives in
    `here`'s namespace (the underlay): only VNI, remote and port, learning off, no lower device and
    no local address, so the underlay's routes pick the egress, as upstream does. It is created
    there directly (IFLA_NET_NS_FD at creation; the socket stays in the creator's namespace), which
    spares the RCU wait of moving a device (~30 ms) that upstream's create-then-move pays. Its index."""
    try:
        here.link(
            "add", ifname=name, kind="vxlan", vxlan_id=params.vni, vxlan_group=str(params.remote),
            vxlan_port=params.port, vxlan_learning=0, net_ns_fd=target_path,
        )  # fmt: skip
    except NetlinkError as exc:
        if exc.code == EEXIST:
            raise NetnsError(
                f"failed to create vxlan interface {name}: it exists in {target_path}, or a VXLAN device "
                f"with VNI {params.vni} and port {params.port} already exists"
            ) from None
        raise NetnsError(f"failed to create vxlan interface {name}: {exc}") from None
    index = index_of(target, name)
    if index is None:
        raise NetnsError(f"vxlan interface {name} missing in {target_path} after its creation")
    return index


@dataclass(frozen=True)
class VxlanParams:
    vni: int
    remote: ipaddress.IPv4Address
    port: int


def vxlan_params(ipr: IPRoute, index: int) -> VxlanParams | None:
    """VNI, remote and port read back from a VXLAN link (None when it is not one)."""
    info = ipr.get_links(index)[0].get_attr("IFLA_LINKINFO")
    if info is None or info.get_attr("IFLA_INFO_KIND") != "vxlan":
        return None
    data = info.get_attr("IFLA_INFO_DATA")
    return VxlanParams(
        int(data.get_attr("IFLA_VXLAN_ID")),
        ipaddress.IPv4Address(data.get_attr("IFLA_VXLAN_GROUP")),
        int(data.get_attr("IFLA_VXLAN_PORT")),
    )


def redirect(ipr: IPRoute, source: int, target: int) -> None:
    """Every frame entering `source` leaves through `target` (ingress qdisc, u32 match-all filter,
    mirred egress redirect, verdict stolen): how the CNI veth and the tunnel are spliced."""
    ipr.tc("add", "ingress", source)
    ipr.tc(
        "add-filter", "u32", source, parent=INGRESS_PARENT, protocol=ETH_P_ALL, target=0x1,
        keys=["0x0/0x0+0"],
        action=[{"kind": "mirred", "direction": "egress", "action": "redirect", "ifindex": target}],
    )  # fmt: skip


def has_redirect(ipr: IPRoute, index: int) -> bool:
    return any(qdisc.get_attr("TCA_KIND") == "ingress" for qdisc in ipr.get_qdiscs(index=index))


def remove_redirect(ipr: IPRoute, source: int) -> None:
    """Drop the ingress qdisc of `source` (its filters go with it); absent is fine."""
    try:
        ipr.tc("del", "ingress", source)
    except NetlinkError as exc:
        if exc.code not in (2, 22):  # ENOENT, EINVAL: no ingress qdisc there
            raise NetnsError(f"failed to remove the redirect on link {source}: {exc}") from None


def delete_link(ipr: IPRoute, index: int) -> None:
    try:
        ipr.link("del", index=index)
    except NetlinkError as exc:
        if exc.code != 19:  # ENODEV: already gone
            raise NetnsError(f"failed to delete link {index}: {exc}") from None
