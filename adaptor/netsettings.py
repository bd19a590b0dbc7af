"""Upstream's pod network settings (the VXLAN tunnel between a pod's netns and its pod VM).

They are accepted with upstream's names, defaults and rules, so an upstream DaemonSet starts
unchanged. Until the adaptor sets the tunnel up (`adaptor.podnetwork`), pods use the pod VM's own
network, and any value other than the default is said at start, never silently ignored.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass

from providers.settings import Setting, SettingValue

TUNNEL_TYPES = ("vxlan",)  # upstream registers no other
MAX_VNI = (1 << 24) - 1
_INTERFACE = re.compile(r"[^/\s:]{1,15}")  # Linux IFNAMSIZ - 1, no '/', ':' or blanks

SETTINGS = [
    Setting("tunnel-type", "TUNNEL_TYPE", default="vxlan", help="pod network tunnel: vxlan only"),
    Setting("vxlan-port", "VXLAN_PORT", kind=int, default=4789, help="VXLAN UDP port of the pod network"),
    Setting("vxlan-min-id", None, kind=int, default=555000, help="first VXLAN id of the pod network"),
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
    vxlan_port: int = 4789
    vxlan_min_id: int = 555000
    host_interface: str = ""
    external_network_via_podvm: bool = False
    pod_subnet_cidrs: tuple[str, ...] = ()

    def not_implemented(self) -> list[str]:
        """One sentence per setting that differs from its default: none of them has an effect yet."""
        default = PodNetworkConfig()
        changed = [
            f"{name}={value}"
            for name, value, initial in (
                ("VXLAN_PORT", self.vxlan_port, default.vxlan_port),
                ("-vxlan-min-id", self.vxlan_min_id, default.vxlan_min_id),
                ("-host-interface", self.host_interface, default.host_interface),
                ("EXTERNAL_NETWORK_VIA_PODVM", self.external_network_via_podvm, False),
                ("POD_SUBNET_CIDRS", ",".join(self.pod_subnet_cidrs), ""),
            )
            if value != initial
        ]
        return [
            f"{setting} has no effect: the pod network (VXLAN tunnel) is not implemented yet; "
            "pods use the pod VM's own network"
            for setting in changed
        ]


def parse_pod_network(values: Mapping[str, SettingValue | None], problems: list[str]) -> PodNetworkConfig:
    """The settings checked as upstream checks them; each problem is appended as one line."""
    tunnel_type = str(values["tunnel_type"] or "vxlan")
    if tunnel_type not in TUNNEL_TYPES:
        problems.append(f"TUNNEL_TYPE: unknown tunnel type {tunnel_type!r} (upstream has only vxlan)")
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
    cidrs = tuple(str(c) for c in raw_cidrs) if isinstance(raw_cidrs, list) else ()
    for cidr in cidrs:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            problems.append(f"POD_SUBNET_CIDRS: {cidr!r} is not a CIDR")
    return PodNetworkConfig(
        tunnel_type=tunnel_type,
        vxlan_port=port,
        vxlan_min_id=min_id,
        host_interface=interface,
        external_network_via_podvm=values["ext_network_via_podvm"] is True,
        pod_subnet_cidrs=cidrs,
    )
