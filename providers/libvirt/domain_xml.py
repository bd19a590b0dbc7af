"""The libvirt domain XML of a pod VM, built and read back as pure functions of text.

Building is separate from talking to libvirt so that the confidential variants (SEV-SNP, TDX), which
the libvirt 9.0 on the build machines cannot even parse, can be checked as golden text.

Tags (OWNER_TAG, SANDBOX_TAG and the request's extra tags) live in the domain's `<metadata>` under
our own namespace, one `<peerpods:tag key="...">value</peerpods:tag>` per tag, because libvirt has
no tags of its own. The same element records the loopback port forwarded to the pod VM in
user-mode networking, so that a restarted adaptor can find it again.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from protocols.scratch_disk import SCRATCH_DISK_NAME

METADATA_NS = "urn:peerpods:libvirt:instance:1"
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
ET.register_namespace("peerpods", METADATA_NS)
ET.register_namespace("qemu", QEMU_NS)

# The port agent-protocol-forwarder listens on inside the pod VM.
FORWARDER_PORT = 15150

DESCRIPTION = "This Virtual Machine is the peer-pod VM"

# SEV-SNP guest policy: bit 17 is reserved and must be one, bit 16 allows SMT; debugging (bit 19)
# and migration agents (bit 18) stay off.
SNP_POLICY = 0x00030000
# TDX TD attributes: bit 28 (SEPT_VE_DISABLE) is what Linux guests expect; debug (bit 0) stays off.
TDX_POLICY = 0x10000000
# Where the TDX Quote Generation Service listens by default; the guest needs it to get quotes.
TDX_QGS_SOCKET = "/var/run/tdx-qgs/qgs.socket"

_USER_NETDEV_ID = "ppnet0"


class LaunchSecurity(Enum):
    """The confidential-computing technology of the pod VM (libvirt's `<launchSecurity type>`)."""

    NONE = ""
    SEV_SNP = "sev-snp"
    TDX = "tdx"
    S390_PV = "s390-pv"

    @property
    def confidential(self) -> bool:
        return self is not LaunchSecurity.NONE


@dataclass(frozen=True)
class LibvirtNetwork:
    """Attach the VM to a libvirt network (a bridge with DHCP); its IP comes from the leases."""

    name: str


@dataclass(frozen=True)
class UserNetwork:
    """QEMU user-mode (slirp) networking with `host_address:host_port` forwarded to the forwarder.

    For hosts where VMs cannot join a bridge in the host's network namespace. libvirt 9.0 has no
    port forwarding for `<interface type='user'>` (that came with the passt backend), so the NIC is
    given to QEMU directly as `-netdev user,hostfwd=...` in `<qemu:commandline>`.
    """

    host_port: int
    host_address: str = "127.0.0.1"
    guest_port: int = FORWARDER_PORT


Network = LibvirtNetwork | UserNetwork


@dataclass(frozen=True)
class DomainSpec:
    """Everything the domain XML depends on. Paths are the volumes' paths on the libvirt host."""

    name: str
    vcpus: int
    memory_mib: int
    root_disk: str
    cidata_disk: str
    network: Network
    firmware: str = ""
    nvram_template: str = ""
    # Direct kernel boot (paths on the libvirt host): no firmware; the cidata image is then a virtio
    # disk, since the kernel published for it (Debian's cloud flavour) has no SATA driver.
    kernel: str = ""
    initrd: str = ""
    cmdline: str = ""
    launch_security: LaunchSecurity = LaunchSecurity.NONE
    cpuset: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    domain_type: str = "kvm"
    scratch_disk: str = ""  # ENABLE_SCRATCH_SPACE: a raw volume the pod VM encrypts ("": none)


@dataclass(frozen=True)
class InstanceMetadata:
    """What `build_domain_xml` stored in `<metadata>`, read back from a domain's XML."""

    tags: Mapping[str, str]
    forwarded_port: int | None = None


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrib: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrib)
    if text is not None:
        element.text = text
    return element


def _metadata(parent: ET.Element, spec: DomainSpec) -> None:
    instance = _sub(_sub(parent, "metadata"), f"{{{METADATA_NS}}}instance")
    for key, value in sorted(spec.tags.items()):
        _sub(instance, f"{{{METADATA_NS}}}tag", value, key=key)
    if isinstance(spec.network, UserNetwork):
        _sub(
            instance,
            f"{{{METADATA_NS}}}forwarder",
            address=spec.network.host_address,
            port=str(spec.network.host_port),
        )


def _direct_boot(spec: DomainSpec) -> bool:
    """Kernel and initrd given, and not confidential (whose firmware is measured: always OVMF)."""
    return bool(spec.kernel) and not spec.launch_security.confidential


def _os(parent: ET.Element, spec: DomainSpec, s390: bool) -> None:
    os_element = _sub(parent, "os")
    if s390:
        _sub(os_element, "type", "hvm", arch="s390x", machine="s390-ccw-virtio")
    else:
        _sub(os_element, "type", "hvm", arch="x86_64", machine="q35")
        if _direct_boot(spec):
            # QEMU loads kernel and initrd itself (SeaBIOS's linuxboot ROM): no firmware, no NVRAM.
            _sub(os_element, "kernel", spec.kernel)
            if spec.initrd:
                _sub(os_element, "initrd", spec.initrd)
            _sub(os_element, "cmdline", spec.cmdline)
            return
        if spec.launch_security.confidential:
            # SEV-SNP and TDX firmware is measured into the launch digest and runs stateless from
            # a ROM (`-bios`): there is no writable flash and hence no NVRAM.
            _sub(os_element, "loader", spec.firmware, readonly="yes", type="rom")
        elif spec.firmware:
            _sub(os_element, "loader", spec.firmware, readonly="yes", type="pflash")
            nvram = _sub(os_element, "nvram")
            if spec.nvram_template:
                nvram.set("template", spec.nvram_template)
    _sub(os_element, "boot", dev="hd")


def _iommu_driver(element: ET.Element, confidential: bool, **attrib: str) -> None:
    """Virtio devices of a confidential guest must use the platform IOMMU (bounce buffers)."""
    if confidential:
        attrib["iommu"] = "on"
    if attrib:
        _sub(element, "driver", **attrib)


def _disks(devices: ET.Element, spec: DomainSpec, s390: bool) -> None:
    confidential = spec.launch_security.confidential
    root = _sub(devices, "disk", type="file", device="disk")
    _iommu_driver(root, confidential, name="qemu", type="qcow2")
    _sub(root, "source", file=spec.root_disk)
    _sub(root, "target", dev="vda", bus="virtio")
    if s390 or _direct_boot(spec):
        # No SATA on s390x, nor in the direct-boot kernel: the cidata image is a read-only virtio disk.
        cidata = _sub(devices, "disk", type="file", device="disk")
        _iommu_driver(cidata, confidential, name="qemu", type="raw")
        _sub(cidata, "source", file=spec.cidata_disk)
        _sub(cidata, "target", dev="vdb", bus="virtio")
    else:
        cidata = _sub(devices, "disk", type="file", device="cdrom")
        _sub(cidata, "driver", name="qemu", type="raw")
        _sub(cidata, "source", file=spec.cidata_disk)
        _sub(cidata, "target", dev="sda", bus="sata")
    _sub(cidata, "readonly")
    if spec.scratch_disk:
        scratch = _sub(devices, "disk", type="file", device="disk")
        _iommu_driver(scratch, confidential, name="qemu", type="raw")
        _sub(scratch, "source", file=spec.scratch_disk)
        _sub(scratch, "target", dev="vdc", bus="virtio")
        _sub(scratch, "serial", SCRATCH_DISK_NAME)  # /dev/disk/by-id/virtio-peerpods-scratch


def _console(devices: ET.Element, s390: bool) -> None:
    if s390:
        console = _sub(devices, "console", type="pty")
        _sub(console, "target", type="sclp", port="0")
        return
    serial = _sub(devices, "serial", type="pty")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="serial", port="0")


def _launch_security(parent: ET.Element, launch_security: LaunchSecurity) -> None:
    if launch_security is LaunchSecurity.NONE:
        return
    element = _sub(parent, "launchSecurity", type=launch_security.value)
    if launch_security is LaunchSecurity.SEV_SNP:
        # cbitpos and reducedPhysBits are left out: libvirt fills them in from the host.
        _sub(element, "policy", f"0x{SNP_POLICY:08x}")
    elif launch_security is LaunchSecurity.TDX:
        _sub(element, "policy", f"0x{TDX_POLICY:08x}")
        _sub(element, "quoteGenerationService", path=TDX_QGS_SOCKET)


def _user_network_args(parent: ET.Element, network: UserNetwork, s390: bool, confidential: bool) -> None:
    hostfwd = f"tcp:{network.host_address}:{network.host_port}-:{network.guest_port}"
    device = ["virtio-net-ccw" if s390 else "virtio-net-pci", f"netdev={_USER_NETDEV_ID}"]
    if not s390:
        # A fixed slot on the root bus: without one QEMU takes slot 1, which libvirt's first
        # pcie-root-port already holds, and refuses to start.
        device += ["bus=pcie.0", "addr=0x10"]
        device.append("romfile=")  # no PXE option ROM: the VM boots from disk only
    if confidential:
        device.append("iommu_platform=on")
    commandline = _sub(parent, f"{{{QEMU_NS}}}commandline")
    for value in ("-netdev", f"user,id={_USER_NETDEV_ID},hostfwd={hostfwd}", "-device", ",".join(device)):
        _sub(commandline, f"{{{QEMU_NS}}}arg", value=value)


def build_domain_xml(spec: DomainSpec) -> str:
    """The domain XML for `spec`: q35 with OVMF or direct kernel boot on x86_64, s390-ccw-virtio for
    IBM Secure Execution."""
    s390 = spec.launch_security is LaunchSecurity.S390_PV
    confidential = spec.launch_security.confidential
    domain = ET.Element("domain", type=spec.domain_type)
    _sub(domain, "name", spec.name)
    _sub(domain, "description", DESCRIPTION)
    _metadata(domain, spec)
    _sub(domain, "memory", str(spec.memory_mib), unit="MiB")
    vcpu = _sub(domain, "vcpu", str(spec.vcpus), placement="static")
    if spec.cpuset:
        vcpu.set("cpuset", spec.cpuset)
    _os(domain, spec, s390)
    if not s390:
        features = _sub(domain, "features")
        _sub(features, "acpi")
        _sub(features, "apic")
    # A confidential guest gets the host's CPU as is: the firmware and kernel look for the
    # TEE's CPUID bits, which a named host-model CPU may not carry.
    _sub(domain, "cpu", mode="host-passthrough" if confidential and not s390 else "host-model")
    devices = _sub(domain, "devices")
    _disks(devices, spec, s390)
    if isinstance(spec.network, LibvirtNetwork):
        interface = _sub(devices, "interface", type="network")
        _sub(interface, "source", network=spec.network.name)
        _sub(interface, "model", type="virtio")
        _iommu_driver(interface, confidential)
    _console(devices, s390)
    if not confidential:
        # The guest agent is a second source of the VM's address. A confidential guest gets no
        # channel: it would be a control path from the untrusted host into the TEE.
        channel = _sub(devices, "channel", type="unix")
        _sub(channel, "target", type="virtio", name="org.qemu.guest_agent.0")
    # No balloon: the pod VM's memory is fixed, and a balloon cannot work in encrypted memory.
    _sub(devices, "memballoon", model="none")
    _launch_security(domain, spec.launch_security)
    if isinstance(spec.network, UserNetwork):
        _user_network_args(domain, spec.network, s390, confidential)
    ET.indent(domain, space="  ")
    return ET.tostring(domain, encoding="unicode") + "\n"


def _parse(domain_xml: str) -> ET.Element:
    # The text comes from libvirtd, which we trust like any cloud API; expat expands no external
    # entities.
    return ET.fromstring(domain_xml)  # noqa: S314


def read_metadata(domain_xml: str) -> InstanceMetadata | None:
    """Our metadata in a domain's XML, or None if peerpods did not create the domain."""
    instance = _parse(domain_xml).find(f"metadata/{{{METADATA_NS}}}instance")
    if instance is None:
        return None
    tags = {tag.get("key", ""): tag.text or "" for tag in instance.iterfind(f"{{{METADATA_NS}}}tag")}
    forwarder = instance.find(f"{{{METADATA_NS}}}forwarder")
    port_text = forwarder.get("port") if forwarder is not None else None
    port = int(port_text) if port_text and port_text.isdigit() else None
    return InstanceMetadata(tags=tags, forwarded_port=port)


def file_disk_paths(domain_xml: str) -> list[str]:
    """Paths of the domain's file-backed disks (overlay and cidata image), not their backing files."""
    paths = []
    for disk in _parse(domain_xml).iterfind("devices/disk[@type='file']"):
        source = disk.find("source")
        path = source.get("file") if source is not None else None
        if path:
            paths.append(path)
    return paths
