"""Settings of the libvirt provider: upstream's flags and environment variables, plus three of ours.

Upstream names and defaults (cloud-api-adaptor `libvirt/manager.go`) are kept as they are. Where we
differ, on purpose:

- `LIBVIRT_LAUNCH_SECURITY` accepts `sev-snp` and `tdx` (libvirt >= 10.5 and >= 11.x XML) besides
  upstream's `s390-pv`. Empty means "decide from the host": `s390-pv` on an s390x host. On any other
  host, asking for confidential VMs (`DISABLECVM=false`) without naming the technology is an error
  at start-up rather than a silently non-confidential VM (upstream falls back to none).
- Naming a technology while `DISABLECVM=true` is reported as contradictory (upstream ignores it).
- Ours: `LIBVIRT_USER_NETWORK` (QEMU user-mode networking with the forwarder port forwarded to a
  loopback port, for hosts where VMs cannot join a bridge; needs a libvirt on this host),
  `LIBVIRT_IP_TIMEOUT` (how long to wait for the VM's address; upstream polls 20 times every 3 s),
  `LIBVIRT_EFI_VARS` (NVRAM template for the OVMF loader; empty lets libvirt pick it from its
  firmware descriptors) and direct kernel boot of non-confidential VMs, as Kata boots its guests:
  `LIBVIRT_KERNEL_VOL_NAME`, `LIBVIRT_INITRD_VOL_NAME` (volumes in the pool, published with the
  image) and `LIBVIRT_KERNEL_CMDLINE`; without them the VM boots the firmware, as upstream's.
- `-data-dir` is accepted because upstream's entrypoint passes it; upstream does not use it either.

No client-side rate limit (`providers.retry.RATE_LIMIT_SETTINGS`): libvirt is one local daemon, not
a metered cloud API.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from providers.libvirt.domain_xml import LaunchSecurity
from providers.settings import ConfigError, Setting, SettingValue

DEFAULT_URI = "qemu+ssh://root@192.168.122.1/system?no_verify=1"
DEFAULT_ROOT_DISK_GIB = 10
# Direct kernel boot of the project's image: its root partition is the second of the virtio disk.
DEFAULT_KERNEL_CMDLINE = "root=/dev/vda2 rw console=ttyS0,115200 quiet"
GIB = 1024**3

_CPUSET = re.compile(r"\d+(-\d+)?(,\d+(-\d+)?)*")  # fullmatch: `$` allows a trailing newline

SETTINGS: list[Setting] = [
    Setting("uri", "LIBVIRT_URI", str, DEFAULT_URI, help="libvirt URI"),
    Setting("pool-name", "LIBVIRT_POOL", str, "default", help="libvirt storage pool"),
    Setting("network-name", "LIBVIRT_NET", str, "default", help="libvirt network"),
    Setting("vol-name", "LIBVIRT_VOL_NAME", str, "podvm-base.qcow2", help="base volume of the pod VM image"),
    Setting(
        "launch-security",
        "LIBVIRT_LAUNCH_SECURITY",
        str,
        "",
        help="confidential VM technology: sev-snp, tdx or s390-pv; empty decides from the host",
    ),
    Setting(
        "firmware",
        "LIBVIRT_EFI_FIRMWARE",
        str,
        "/usr/share/OVMF/OVMF_CODE_4M.fd",
        help="path of the OVMF firmware on the libvirt host (SEV-SNP/TDX: the confidential build)",
    ),
    Setting(
        "firmware-vars",
        "LIBVIRT_EFI_VARS",
        str,
        "",
        help="NVRAM template for the OVMF loader; empty lets libvirt choose",
    ),
    Setting(
        "kernel-vol-name",
        "LIBVIRT_KERNEL_VOL_NAME",
        str,
        "",
        help="kernel volume in the pool for direct kernel boot of non-confidential VMs (no firmware); "
        "empty boots the firmware",
    ),
    Setting(
        "initrd-vol-name",
        "LIBVIRT_INITRD_VOL_NAME",
        str,
        "",
        help="initrd volume in the pool for direct kernel boot (with LIBVIRT_KERNEL_VOL_NAME)",
    ),
    Setting(
        "kernel-cmdline",
        "LIBVIRT_KERNEL_CMDLINE",
        str,
        DEFAULT_KERNEL_CMDLINE,
        help="kernel command line for direct kernel boot (the image manifest's direct_boot.cmdline)",
    ),
    Setting("cpu", "LIBVIRT_CPU", int, 2, help="number of vCPUs when the pod does not ask"),
    Setting("memory", "LIBVIRT_MEMORY", int, 8192, help="memory in MiB when the pod does not ask"),
    Setting(
        "cpuset",
        "LIBVIRT_CPUSET",
        str,
        "",
        help='host CPUs to pin vCPUs to, e.g. "0,2,4,6" or "0-3,8"',
    ),
    Setting(
        "root-disk-size",
        "LIBVIRT_ROOT_DISK_SIZE",
        int,
        DEFAULT_ROOT_DISK_GIB,
        help="root disk size in GiB (at least the base volume's)",
    ),
    Setting(
        "data-dir", None, str, "/var/lib/libvirt/images", help="accepted for upstream compatibility; unused"
    ),
    Setting("disable-cvm", "DISABLECVM", bool, True, help="use non-confidential VMs for peer pods"),
    Setting(
        "user-network",
        "LIBVIRT_USER_NETWORK",
        bool,
        False,
        help="QEMU user-mode networking, the forwarder port forwarded to a 127.0.0.1 port",
    ),
    Setting(
        "domain-type",
        "LIBVIRT_DOMAIN_TYPE",
        str,
        "kvm",
        help="kvm, or qemu for software emulation (TCG) where KVM cannot run the guest; never confidential",
    ),
    Setting(
        "ip-timeout",
        "LIBVIRT_IP_TIMEOUT",
        float,
        60.0,
        help="seconds to wait for the VM's IP address (DHCP lease or guest agent)",
    ),
]


DOMAIN_TYPES = ("kvm", "qemu")


@dataclass(frozen=True)
class LibvirtConfig:
    """Validated settings. `launch_security` None means "decide from the host's architecture"."""

    uri: str = DEFAULT_URI
    pool: str = "default"
    network: str = "default"
    vol_name: str = "podvm-base.qcow2"
    launch_security: LaunchSecurity | None = LaunchSecurity.NONE
    firmware: str = "/usr/share/OVMF/OVMF_CODE_4M.fd"
    firmware_vars: str = ""
    kernel_vol: str = ""
    initrd_vol: str = ""
    kernel_cmdline: str = DEFAULT_KERNEL_CMDLINE
    cpu: int = 2
    memory_mib: int = 8192
    cpuset: str = ""
    root_disk_gib: int = DEFAULT_ROOT_DISK_GIB
    user_network: bool = False
    ip_timeout_s: float = 60.0
    domain_type: str = "kvm"

    @property
    def root_disk_bytes(self) -> int:
        return self.root_disk_gib * GIB

    @property
    def direct_boot(self) -> bool:
        """Kernel and initrd from the pool instead of the firmware (never for confidential VMs)."""
        return bool(self.kernel_vol)


def _text(values: Mapping[str, SettingValue | None], key: str) -> str:
    value = values.get(key)
    return "" if value is None else str(value).strip()


def _number(values: Mapping[str, SettingValue | None], key: str, default: float) -> float:
    value = values.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default


def parse_config(values: Mapping[str, SettingValue | None]) -> LibvirtConfig:
    """Check the resolved settings (keyed by `Setting.dest`) together; ConfigError lists every problem."""
    problems: list[str] = []
    uri, pool, network = _text(values, "uri"), _text(values, "pool_name"), _text(values, "network_name")
    vol_name, firmware = _text(values, "vol_name"), _text(values, "firmware")
    cpuset, security_text = _text(values, "cpuset"), _text(values, "launch_security")
    disable_cvm = values.get("disable_cvm") is not False
    user_network = values.get("user_network") is True
    cpu = int(_number(values, "cpu", 2))
    memory = int(_number(values, "memory", 8192))
    root_gib = int(_number(values, "root_disk_size", DEFAULT_ROOT_DISK_GIB))
    ip_timeout = _number(values, "ip_timeout", 60.0)
    domain_type = _text(values, "domain_type") or "kvm"
    kernel_vol, initrd_vol = _text(values, "kernel_vol_name"), _text(values, "initrd_vol_name")
    kernel_cmdline = _text(values, "kernel_cmdline") or DEFAULT_KERNEL_CMDLINE

    for text, names in ((uri, "-uri or LIBVIRT_URI"), (pool, "-pool-name or LIBVIRT_POOL")):
        if not text:
            problems.append(f"{names} is empty")
    if not vol_name:
        problems.append("-vol-name or LIBVIRT_VOL_NAME is empty")
    if not network and not user_network:
        problems.append("-network-name or LIBVIRT_NET is empty (and LIBVIRT_USER_NETWORK is off)")
    if cpu <= 0:
        problems.append(f"LIBVIRT_CPU must be greater than zero, got {cpu}")
    if memory <= 0:
        problems.append(f"LIBVIRT_MEMORY must be greater than zero, got {memory}")
    if root_gib < 0:
        problems.append(f"LIBVIRT_ROOT_DISK_SIZE must not be negative, got {root_gib}")
    if ip_timeout <= 0:
        problems.append(f"LIBVIRT_IP_TIMEOUT must be greater than zero, got {ip_timeout}")
    if user_network and urlsplit(uri).hostname not in (None, "", "localhost", "127.0.0.1", "::1"):
        problems.append(
            f"LIBVIRT_USER_NETWORK forwards ports on the libvirt host's loopback, which {uri} is not"
        )
    if domain_type not in DOMAIN_TYPES:
        problems.append(f"LIBVIRT_DOMAIN_TYPE {domain_type!r} is not one of: {', '.join(DOMAIN_TYPES)}")
    elif domain_type == "qemu" and not disable_cvm:
        problems.append(
            "LIBVIRT_DOMAIN_TYPE=qemu (software emulation) cannot run confidential VMs: set DISABLECVM=true"
        )
    if initrd_vol and not kernel_vol:
        problems.append("LIBVIRT_INITRD_VOL_NAME is set without LIBVIRT_KERNEL_VOL_NAME")
    if kernel_vol and not disable_cvm:
        problems.append(
            "LIBVIRT_KERNEL_VOL_NAME (direct kernel boot) is for non-confidential VMs only: confidential "
            "ones boot their measured firmware; unset it or set DISABLECVM=true"
        )
    if cpuset and not _CPUSET.fullmatch(cpuset):
        problems.append(
            f"LIBVIRT_CPUSET {cpuset!r} is not a list of CPU numbers or ranges (e.g. '0,2,4,6' or '0-3')"
        )

    launch_security: LaunchSecurity | None = LaunchSecurity.NONE
    known = [member.value for member in LaunchSecurity if member.confidential]
    if security_text and security_text not in known:
        problems.append(f"LIBVIRT_LAUNCH_SECURITY {security_text!r} is not one of: {', '.join(known)}")
    elif security_text and disable_cvm:
        problems.append(
            f"LIBVIRT_LAUNCH_SECURITY={security_text} contradicts DISABLECVM=true; "
            "set DISABLECVM=false for confidential VMs"
        )
    elif not disable_cvm:
        launch_security = LaunchSecurity(security_text) if security_text else None
    if launch_security in (LaunchSecurity.SEV_SNP, LaunchSecurity.TDX) and not firmware:
        problems.append(f"LIBVIRT_EFI_FIRMWARE is required for {security_text} (the confidential OVMF build)")
    if problems:
        raise ConfigError(problems)
    return LibvirtConfig(
        uri=uri,
        pool=pool,
        network=network,
        vol_name=vol_name,
        launch_security=launch_security,
        firmware=firmware,
        firmware_vars=_text(values, "firmware_vars"),
        kernel_vol=kernel_vol,
        initrd_vol=initrd_vol,
        kernel_cmdline=kernel_cmdline,
        cpu=cpu,
        memory_mib=memory,
        cpuset=cpuset,
        root_disk_gib=root_gib or DEFAULT_ROOT_DISK_GIB,
        user_network=user_network,
        ip_timeout_s=ip_timeout,
        domain_type=domain_type,
    )


def resolve_launch_security(config: LibvirtConfig, host_arch: str) -> LaunchSecurity:
    """The technology to use on a host of `host_arch` (libvirt's node model, e.g. "x86_64")."""
    if config.launch_security is not None:
        return config.launch_security
    if host_arch == "s390x":
        return LaunchSecurity.S390_PV
    raise ConfigError(
        [
            f"DISABLECVM=false but LIBVIRT_LAUNCH_SECURITY is empty and a {host_arch} host has no default: "
            "set it to sev-snp or tdx (or DISABLECVM=true for non-confidential VMs)"
        ]
    )
