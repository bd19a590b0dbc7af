"""apf.json's `pod-network` object (upstream's `tunneler.Config`), as pure data over JSON.

Written by the adaptor at CreateVM from the pod's network namespace, read by the forwarder in the
pod VM. The JSON follows what upstream's Go encoder writes, key for key and in its order: prefixes
as "address/len" (the interface's length, not masked), an absent gateway as "", route protocol,
route scope and neighbour state as words, zero values of `omitempty` fields left out. Reading
folds key case, as Go's decoder does, so pre-JSON-tag documents ({"Dst": ..., "GW": ...}) still load.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

TUNNEL_TYPES = ("vxlan",)
DEFAULT_VXLAN_PORT = 4789
DEFAULT_VXLAN_MIN_ID = 555000
MAX_POD_MTU = 1450  # an IPv4 VXLAN payload in a 1500-byte underlay

# netlink numbers <-> the words upstream's JSON uses
ROUTE_PROTOCOLS = {"boot": 3, "static": 4, "dhcp": 16, "kernel": 2}
ROUTE_SCOPES = {"universe": 0, "site": 200, "link": 253, "host": 254, "nowhere": 255}
NEIGHBOR_STATES = {
    "none": 0x00, "incomplete": 0x01, "reachable": 0x02, "stale": 0x04, "delay": 0x08,
    "probe": 0x10, "failed": 0x20, "noarp": 0x40, "permanent": 0x80,
}  # fmt: skip
NUD_PERMANENT = NEIGHBOR_STATES["permanent"]
_MAC = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")
_IFNAME = re.compile(r"[^\s/:\x00]{1,15}")

Prefix = ipaddress.IPv4Interface


class PodNetworkError(ValueError):
    """A `pod-network` object that cannot be used: says which field and why."""


@dataclass(frozen=True)
class Route:
    dst: ipaddress.IPv4Network | None = None  # None: no destination (upstream writes "")
    gw: ipaddress.IPv4Address | None = None
    dev: str = ""
    protocol: int = 0
    scope: int = 0

    def to_document(self) -> dict[str, Any]:
        document: dict[str, Any] = {"dst": str(self.dst) if self.dst else "", "gw": str(self.gw or "")}
        if self.dev:
            document["dev"] = self.dev
        if self.protocol:
            document["protocol"] = _word(ROUTE_PROTOCOLS, self.protocol, "route protocol")
        if self.scope:
            document["scope"] = _word(ROUTE_SCOPES, self.scope, "route scope")
        return document

    @classmethod
    def from_document(cls, raw: object, where: str) -> Route:
        document = _folded(raw, where)
        protocol, scope = document.get("protocol"), document.get("scope")
        return cls(
            dst=_network(document.get("dst"), f"{where}.dst"),
            gw=_address(document.get("gw"), f"{where}.gw"),
            dev=_ifname(document.get("dev"), f"{where}.dev", required=False),
            protocol=_number(ROUTE_PROTOCOLS, protocol, "route protocol", where) if protocol else 0,
            scope=_number(ROUTE_SCOPES, scope, "route scope", where) if scope else 0,
        )

    def sort_key(self) -> tuple[bytes, int]:
        """Upstream's order within the main table: destination address bytes, then prefix length."""
        dst = self.dst or ipaddress.IPv4Network("0.0.0.0/0")
        return (dst.network_address.packed, dst.prefixlen)


@dataclass(frozen=True)
class Neighbor:
    ip: ipaddress.IPv4Address
    hw_addr: str
    dev: str
    state: int = NUD_PERMANENT

    def to_document(self) -> dict[str, Any]:
        document: dict[str, Any] = {"ip": str(self.ip), "hw-addr": self.hw_addr, "dev": self.dev}
        if self.state:
            document["state"] = _word(NEIGHBOR_STATES, self.state, "neighbor state")
        return document

    @classmethod
    def from_document(cls, raw: object, where: str) -> Neighbor:
        document = _folded(raw, where)
        ip = _address(document.get("ip"), f"{where}.ip")
        if ip is None:
            raise PodNetworkError(f"{where}.ip: a neighbour needs an IPv4 address")
        state = document.get("state")
        return cls(
            ip=ip,
            hw_addr=_mac(document.get("hw-addr"), f"{where}.hw-addr"),
            dev=_ifname(document.get("dev"), f"{where}.dev"),
            state=_number(NEIGHBOR_STATES, state, "neighbor state", where) if state else 0,
        )


@dataclass(frozen=True)
class PodNetwork:
    """What the pod VM needs to wear the pod's network identity, and how to reach the worker."""

    pod_ip: Prefix
    pod_hw_addr: str
    interface: str
    worker_node_ip: Prefix
    tunnel_type: str = "vxlan"
    routes: tuple[Route, ...] = ()
    neighbors: tuple[Neighbor, ...] = ()
    mtu: int = 1500
    index: int = 0
    vxlan_port: int = DEFAULT_VXLAN_PORT
    vxlan_id: int = DEFAULT_VXLAN_MIN_ID
    dedicated: bool = False
    external_net_via_pod_vm: bool = False

    def to_document(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "podip": str(self.pod_ip),
            "pod-hw-addr": self.pod_hw_addr,
            "interface": self.interface,
            "worker-node-ip": str(self.worker_node_ip),
            "tunnel-type": self.tunnel_type,
            "routes": [route.to_document() for route in self.routes] or None,
            "neighbors": [neighbor.to_document() for neighbor in self.neighbors] or None,
            "mtu": self.mtu,
            "index": self.index,
        }
        if self.vxlan_port:
            document["vxlan-port"] = self.vxlan_port
        if self.vxlan_id:
            document["vxlan-id"] = self.vxlan_id
        document["dedicated"] = self.dedicated
        document["external-net-via-pod-vm"] = self.external_net_via_pod_vm
        return document

    @classmethod
    def from_document(cls, raw: object) -> PodNetwork:
        document = _folded(raw, "pod-network")
        pod_ip = _interface(document.get("podip"), "pod-network.podip")
        worker = _interface(document.get("worker-node-ip"), "pod-network.worker-node-ip")
        tunnel_type = document.get("tunnel-type") or "vxlan"
        if tunnel_type not in TUNNEL_TYPES:
            raise PodNetworkError(f"unknown tunnel type: {tunnel_type!r}")
        routes = document.get("routes") or []
        neighbors = document.get("neighbors") or []
        if not isinstance(routes, list) or not isinstance(neighbors, list):
            raise PodNetworkError("pod-network: 'routes' and 'neighbors' must be lists or null")
        return cls(
            pod_ip=pod_ip,
            pod_hw_addr=_mac(document.get("pod-hw-addr"), "pod-network.pod-hw-addr"),
            interface=_ifname(document.get("interface"), "pod-network.interface"),
            worker_node_ip=worker,
            tunnel_type=tunnel_type,
            routes=tuple(Route.from_document(r, f"pod-network.routes[{i}]") for i, r in enumerate(routes)),
            neighbors=tuple(
                Neighbor.from_document(n, f"pod-network.neighbors[{i}]") for i, n in enumerate(neighbors)
            ),
            mtu=_integer(document.get("mtu", 1500), "pod-network.mtu", 68, 65535),
            index=_integer(document.get("index", 0), "pod-network.index", 0, 2**24),
            vxlan_port=_integer(document.get("vxlan-port") or DEFAULT_VXLAN_PORT, "vxlan-port", 1, 65535),
            vxlan_id=_integer(document.get("vxlan-id") or DEFAULT_VXLAN_MIN_ID, "vxlan-id", 1, 2**24 - 1),
            dedicated=bool(document.get("dedicated", False)),
            external_net_via_pod_vm=bool(document.get("external-net-via-pod-vm", False)),
        )

    @property
    def pod_mtu(self) -> int:
        """The MTU the pod's interface gets in the pod VM: the CNI's, capped by VXLAN's overhead."""
        return min(self.mtu, MAX_POD_MTU)


def _folded(raw: object, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise PodNetworkError(f"{where}: must be an object")
    return {str(key).lower(): value for key, value in raw.items()}


def _word(table: Mapping[str, int], number: int, name: str) -> str:
    for word, value in table.items():
        if value == number:
            return word
    raise PodNetworkError(f"unknown {name}: {number}")


def _number(table: Mapping[str, int], word: object, name: str, where: str) -> int:
    if not isinstance(word, str) or word not in table:
        raise PodNetworkError(f"{where}: unknown {name}: {word}")
    return table[word]


def _integer(value: object, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise PodNetworkError(f"{where}: must be an integer in [{low}, {high}], not {value!r}")
    return value


def _interface(value: object, where: str) -> Prefix:
    if not isinstance(value, str) or "/" not in value:
        raise PodNetworkError(f"{where}: must be an IPv4 address with its prefix length, not {value!r}")
    try:
        return ipaddress.IPv4Interface(value)
    except ValueError as exc:
        raise PodNetworkError(f"{where}: {exc}") from None


def _network(value: object, where: str) -> ipaddress.IPv4Network | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise PodNetworkError(f"{where}: must be a prefix string")
    try:
        return ipaddress.IPv4Network(value, strict=False)
    except ValueError as exc:
        raise PodNetworkError(f"{where}: {exc}") from None


def _address(value: object, where: str) -> ipaddress.IPv4Address | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise PodNetworkError(f"{where}: must be an address string")
    try:
        return ipaddress.IPv4Address(value)
    except ValueError as exc:
        raise PodNetworkError(f"{where}: {exc}") from None


def _mac(value: object, where: str) -> str:
    if not isinstance(value, str) or not _MAC.fullmatch(value.lower()):
        raise PodNetworkError(f"{where}: must be a MAC address like 0a:58:0a:80:00:02, not {value!r}")
    return value.lower()


def _ifname(value: object, where: str, required: bool = True) -> str:
    if value in (None, "") and not required:
        return ""
    if not isinstance(value, str) or not _IFNAME.fullmatch(value):
        raise PodNetworkError(f"{where}: not an interface name: {value!r}")
    return value
