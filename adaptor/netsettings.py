"""Upstream's pod network settings (the VXLAN tunnel between a pod's netns and its pod VM).

They are accepted with upstream's names, defaults and rules, so an upstream DaemonSet starts
unchanged; `adaptor.podnetwork` builds the tunnel from them. Upstream's experimental external
network through the pod VM is not implemented: setting it is said at start, never silently ignored.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from protocols.podnet.config import DEFAULT_VXLAN_MIN_ID, DEFAULT_VXLAN_PORT, TUNNEL_TYPES
from providers.settings import Setting, SettingValue

MAX_VNI = (1 << 24) - 1
_INTERFACE = re.compile(r"[^/\s:]{1,15}")  # Linux IFNAMSIZ - 1, no '/', ':' or blanks

SETTINGS = [
    Setting("tunnel-type", "TUNNEL_TYPE", default="vxlan", help="pod network tunnel: vxlan only"),
    Setting("vxlan-port", "VXLAN_PORT", kind=int, default=DEFAULT_VXLAN_PORT,
            help="VXLAN UDP port of the pod network"),
    Setting("vxlan-min-id", None, kind=int, default=DEFAULT_VXLAN_MIN_ID,
            help="first VXLAN id of the pod network (the lowest free one goes to each new pod)"),
    Setting("host-interface", None, default="",
            help="worker interface for pod network traffic (default: the primary one)"),
    Setting("ext-network-via-podvm", "EXTERNAL_NETWORK_VIA_PODVM", kind=bool, default=False,
            help="[experimental upstream] external traffic through the pod VM"),
    Setting("pod-subnet-cidrs", "POD_SUBNET_CIDRS", kind=list, default=[],
            help="[experimental upstream] local pod subnets for the tunnel, comma-separated CIDRs"),
]  # fmt: skip


@dataclass(frozen=True)
class PodNetworkConfig:
    tunnel_type: str = "vxlan"
    vxlan_port: int = DEFAULT_VXLAN_PORT
    vxlan_min_id: int = DEFAULT_VXLAN_MIN_ID
    host_interface: str = ""
    external_network_via_podvm: bool = False
    pod_subnet_cidrs: tuple[ipaddress.IPv4Network, ...] = ()

    def not_implemented(self) -> list[str]:
        """The one pod network setting that has no effect here, when set."""
        if not self.external_network_via_podvm:
            return []
        return [
            "EXTERNAL_NETWORK_VIA_PODVM=True has no effect: external traffic through the pod VM "
            "(experimental upstream) is not implemented; the pod's traffic goes through the worker"
        ]


def parse_pod_network(values: Mapping[str, SettingValue | None], problems: list[str]) -> PodNetworkConfig:
    """The settings checked as upstream checks them; each problem is appended as one line."""
    tunnel_type = str(values["tunnel_type"] or "vxlan")
    if tunnel_type not in TUNNEL_TYPES:
        problems.append(f"TUNNEL_TYPE: unknown tunnel type: {json.dumps(tunnel_type)}")  # upstream's %q
    port = int(str(values["vxlan_port"]))
    if not 1 <= port <= 65535:
        problems.append(f"VXLAN_PORT: {port} is not a UDP port (1-65535)")
    min_id = int(str(values["vxlan_min_id"]))
    if not 1 <= min_id <= MAX_VNI:
        problems.append(f"-vxlan-min-id: {min_id} is not a VXLAN id (1-{MAX_VNI})")
    interface = str(values["host_interface"] or "")
    if interface and not _INTERFACE.fullmatch(interface):
        problems.append(f"-host-interface: {interface!r} is not a network interface name")
    raw_cidrs = values["pod_subnet_cidrs"]
    cidrs = []
    for cidr in raw_cidrs if isinstance(raw_cidrs, list) else ():
        try:
            cidrs.append(ipaddress.IPv4Network(str(cidr), strict=False))
        except ValueError:
            problems.append(f"POD_SUBNET_CIDRS: {cidr!r} is not an IPv4 CIDR")
    return PodNetworkConfig(
        tunnel_type=tunnel_type,
        vxlan_port=port,
        vxlan_min_id=min_id,
        host_interface=interface,
        external_network_via_podvm=values["ext_network_via_podvm"] is True,
        pod_subnet_cidrs=tuple(cidrs),
    )
