"""Domain XML of the libvirt provider: golden text for plain, SEV-SNP and TDX, and structure checks.

libvirt 9.0 (Debian bookworm) cannot parse `launchSecurity type='sev-snp'|'tdx'` (10.5 / 11.x), so
the confidential variants are pinned as golden files; everything else is also fed to libvirt's own
parser (the test driver) when libvirt-python is installed. Set PEERPODS_UPDATE_GOLDEN=1 to rewrite
the golden files after an intended change, then review the diff.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from providers.base import OWNER_TAG, SANDBOX_TAG
from providers.libvirt.domain_xml import (
    FORWARDER_PORT,
    METADATA_NS,
    QEMU_NS,
    DomainSpec,
    LaunchSecurity,
    LibvirtNetwork,
    UserNetwork,
    build_domain_xml,
    file_disk_paths,
    read_metadata,
)

GOLDEN = Path(__file__).resolve().parent / "golden"
FIRMWARE = "/usr/share/OVMF/OVMF_CODE_4M.fd"
TAGS = {OWNER_TAG: "caa-7f3c", SANDBOX_TAG: "4d1c9a0e2b7f"}


def spec(**overrides: object) -> DomainSpec:
    fields: dict[str, object] = {
        "name": "podvm-nginx-4d1c9a0e",
        "vcpus": 2,
        "memory_mib": 8192,
        "root_disk": "/var/lib/libvirt/images/podvm-nginx-4d1c9a0e-root.qcow2",
        "cidata_disk": "/var/lib/libvirt/images/podvm-nginx-4d1c9a0e-cloudinit.iso",
        "network": LibvirtNetwork("default"),
        "firmware": FIRMWARE,
        "tags": TAGS,
    }
    fields.update(overrides)
    return DomainSpec(**fields)  # type: ignore[arg-type]


def parsed(text: str) -> ET.Element:
    return ET.fromstring(text)


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("PEERPODS_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; rerun with PEERPODS_UPDATE_GOLDEN=1 if intended"


@pytest.mark.parametrize(
    ("golden", "security", "firmware"),
    [
        ("libvirt_plain.xml", LaunchSecurity.NONE, FIRMWARE),
        ("libvirt_sev_snp.xml", LaunchSecurity.SEV_SNP, "/usr/share/ovmf/OVMF.amdsev.fd"),
        ("libvirt_tdx.xml", LaunchSecurity.TDX, "/usr/share/ovmf/OVMF.inteltdx.fd"),
    ],
)
def test_golden(golden: str, security: LaunchSecurity, firmware: str) -> None:
    check_golden(golden, build_domain_xml(spec(launch_security=security, firmware=firmware)))


def test_plain_is_q35_with_pflash_loader_and_nvram() -> None:
    root = parsed(build_domain_xml(spec(nvram_template="/usr/share/OVMF/OVMF_VARS_4M.fd", cpuset="0-3,8")))
    assert root.get("type") == "kvm"
    os_type = root.find("os/type")
    assert os_type is not None and os_type.get("machine") == "q35" and os_type.get("arch") == "x86_64"
    loader = root.find("os/loader")
    assert loader is not None and loader.text == FIRMWARE
    assert (loader.get("type"), loader.get("readonly")) == ("pflash", "yes")
    nvram = root.find("os/nvram")
    assert nvram is not None and nvram.get("template") == "/usr/share/OVMF/OVMF_VARS_4M.fd"
    assert root.find("launchSecurity") is None
    assert root.findtext("memory") == "8192" and root.find("memory").get("unit") == "MiB"  # type: ignore[union-attr]
    assert root.find("vcpu").get("cpuset") == "0-3,8"  # type: ignore[union-attr]
    assert root.find("cpu").get("mode") == "host-model"  # type: ignore[union-attr]
    assert root.find("devices/memballoon").get("model") == "none"  # type: ignore[union-attr]
    assert root.find("devices/serial") is not None and root.find("devices/console") is not None
    agent = root.find("devices/channel[@type='unix']/target")
    assert agent is not None and agent.get("name") == "org.qemu.guest_agent.0"
    assert root.findall(".//driver[@iommu]") == []


def test_plain_without_firmware_boots_without_a_loader() -> None:
    root = parsed(build_domain_xml(spec(firmware="")))
    assert root.find("os/loader") is None and root.find("os/nvram") is None


def test_disks_and_nic() -> None:
    text = build_domain_xml(spec())
    root = parsed(text)
    disks = root.findall("devices/disk")
    assert [(d.get("device"), d.find("target").get("bus"), d.find("driver").get("type")) for d in disks] == [  # type: ignore[union-attr]
        ("disk", "virtio", "qcow2"),
        ("cdrom", "sata", "raw"),
    ]
    assert disks[1].find("readonly") is not None
    interface = root.find("devices/interface")
    assert interface is not None and interface.get("type") == "network"
    assert interface.find("source").get("network") == "default"  # type: ignore[union-attr]
    assert interface.find("model").get("type") == "virtio"  # type: ignore[union-attr]
    assert file_disk_paths(text) == [spec().root_disk, spec().cidata_disk]


@pytest.mark.parametrize(
    ("security", "policy"),
    [(LaunchSecurity.SEV_SNP, "0x00030000"), (LaunchSecurity.TDX, "0x10000000")],
)
def test_confidential_x86(security: LaunchSecurity, policy: str) -> None:
    root = parsed(build_domain_xml(spec(launch_security=security)))
    launch = root.find("launchSecurity")
    assert launch is not None and launch.get("type") == security.value
    assert launch.findtext("policy") == policy
    # Stateless firmware from ROM, measured at launch: no writable flash, no NVRAM.
    loader = root.find("os/loader")
    assert loader is not None and loader.get("type") == "rom" and loader.text == FIRMWARE
    assert root.find("os/nvram") is None
    assert root.find("os/type").get("machine") == "q35"  # type: ignore[union-attr]
    assert root.find("cpu").get("mode") == "host-passthrough"  # type: ignore[union-attr]
    # virtio devices go through the platform IOMMU (bounce buffers in shared memory).
    assert root.find("devices/disk[@device='disk']/driver").get("iommu") == "on"  # type: ignore[union-attr]
    assert root.find("devices/interface/driver").get("iommu") == "on"  # type: ignore[union-attr]
    assert root.find("devices/channel") is None  # no guest agent: no host control path into the TEE


def test_snp_leaves_host_specific_bits_to_libvirt() -> None:
    launch = parsed(build_domain_xml(spec(launch_security=LaunchSecurity.SEV_SNP))).find("launchSecurity")
    assert launch is not None
    assert launch.find("cbitpos") is None and launch.find("reducedPhysBits") is None


def test_tdx_names_the_quote_generation_service() -> None:
    launch = parsed(build_domain_xml(spec(launch_security=LaunchSecurity.TDX))).find("launchSecurity")
    qgs = launch.find("quoteGenerationService") if launch is not None else None
    assert qgs is not None and qgs.get("path") == "/var/run/tdx-qgs/qgs.socket"


def test_s390_secure_execution() -> None:
    root = parsed(build_domain_xml(spec(launch_security=LaunchSecurity.S390_PV)))
    os_type = root.find("os/type")
    assert os_type is not None and (os_type.get("arch"), os_type.get("machine")) == (
        "s390x",
        "s390-ccw-virtio",
    )
    assert root.find("os/loader") is None
    assert root.find("launchSecurity").get("type") == "s390-pv"  # type: ignore[union-attr]
    assert [d.find("target").get("bus") for d in root.findall("devices/disk")] == ["virtio", "virtio"]  # type: ignore[union-attr]
    assert all(d.get("iommu") == "on" for d in root.findall("devices/disk/driver"))
    assert root.find("devices/console/target").get("type") == "sclp"  # type: ignore[union-attr]
    assert root.find("devices/serial") is None and root.find("devices/channel") is None


def test_user_network_forwards_the_forwarder_port_to_loopback() -> None:
    text = build_domain_xml(spec(network=UserNetwork(host_port=41234)))
    root = parsed(text)
    assert root.find("devices/interface") is None
    args = [arg.get("value") for arg in root.findall(f"{{{QEMU_NS}}}commandline/{{{QEMU_NS}}}arg")]
    assert args == [
        "-netdev",
        f"user,id=ppnet0,hostfwd=tcp:127.0.0.1:41234-:{FORWARDER_PORT}",
        "-device",
        "virtio-net-pci,netdev=ppnet0,bus=pcie.0,addr=0x10,romfile=",
    ]
    metadata = read_metadata(text)
    assert metadata is not None and metadata.forwarded_port == 41234


def test_user_network_in_a_confidential_guest_uses_the_iommu() -> None:
    text = build_domain_xml(
        spec(network=UserNetwork(host_port=41234), launch_security=LaunchSecurity.SEV_SNP)
    )
    args = [arg.get("value") for arg in parsed(text).iter(f"{{{QEMU_NS}}}arg")]
    assert args[-1] == "virtio-net-pci,netdev=ppnet0,bus=pcie.0,addr=0x10,romfile=,iommu_platform=on"


DIRECT = {
    "kernel": "/var/lib/libvirt/images/podvm-vmlinuz",
    "initrd": "/var/lib/libvirt/images/podvm-initrd.img",
    "cmdline": "root=PARTUUID=6b7d0634-a77a-5950-b50f-4b45e9e5f187 rw console=ttyS0,115200 quiet",
}


def test_golden_direct_kernel_boot() -> None:
    check_golden("libvirt_direct_boot.xml", build_domain_xml(spec(**DIRECT)))


def test_direct_kernel_boot_has_no_firmware_and_a_virtio_cidata_disk() -> None:
    root = parsed(build_domain_xml(spec(**DIRECT)))
    assert root.find("os/loader") is None and root.find("os/nvram") is None
    assert [root.findtext(f"os/{tag}") for tag in ("kernel", "initrd", "cmdline")] == list(DIRECT.values())
    cidata = root.findall("devices/disk")[1]
    assert cidata.get("device") == "disk" and cidata.find("readonly") is not None
    assert cidata.find("target").get("bus") == "virtio"  # type: ignore[union-attr]


@pytest.mark.parametrize("security", [LaunchSecurity.SEV_SNP, LaunchSecurity.TDX])
def test_confidential_vms_boot_their_firmware_even_with_a_kernel(security: LaunchSecurity) -> None:
    root = parsed(build_domain_xml(spec(launch_security=security, **DIRECT)))
    assert root.find("os/kernel") is None and root.find("os/loader") is not None
    assert root.findall("devices/disk")[1].get("device") == "cdrom"


def test_metadata_round_trip_with_awkward_values() -> None:
    tags = {**TAGS, "team": "a<b>&\"c'", "empty": ""}
    text = build_domain_xml(spec(tags=tags))
    assert parsed(text).find(f"metadata/{{{METADATA_NS}}}instance") is not None
    metadata = read_metadata(text)
    assert metadata is not None
    assert dict(metadata.tags) == tags and metadata.forwarded_port is None


def test_foreign_domain_has_no_metadata() -> None:
    foreign = (
        "<domain type='kvm'><name>web</name><metadata><app:x xmlns:app='urn:other'/></metadata>"
        "<devices><disk type='file' device='disk'><source file='/images/web.qcow2'/>"
        "<backingStore type='file'><source file='/images/base.qcow2'/></backingStore></disk>"
        "<disk type='network' device='disk'><source protocol='rbd' name='pool/img'/></disk>"
        "<disk type='file' device='cdrom'/></devices></domain>"
    )
    assert read_metadata(foreign) is None
    # Only the disks' own files: never a backing file, a network disk or an empty drive.
    assert file_disk_paths(foreign) == ["/images/web.qcow2"]


# -- the same XML through libvirt's own parser (libvirt 9.0 here) ------------------------------


@pytest.fixture
def test_conn() -> Iterator[Any]:
    libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed (it needs libvirt-dev)")
    conn = libvirt.open("test:///default")
    yield conn
    conn.close()


@pytest.mark.parametrize(
    "domain_spec",
    [
        spec(),
        spec(network=UserNetwork(host_port=41234)),
        spec(launch_security=LaunchSecurity.S390_PV),
        spec(**DIRECT),
    ],
    ids=["plain", "user-network", "s390-pv", "direct-boot"],
)
def test_libvirt_accepts(test_conn: Any, domain_spec: DomainSpec) -> None:
    domain = test_conn.defineXML(build_domain_xml(domain_spec))
    try:
        kept = read_metadata(domain.XMLDesc(0))
        assert kept is not None and dict(kept.tags) == TAGS
    finally:
        domain.undefine()


@pytest.mark.parametrize("security", [LaunchSecurity.SEV_SNP, LaunchSecurity.TDX])
def test_confidential_xml_is_valid_apart_from_what_libvirt_9_lacks(
    test_conn: Any, security: LaunchSecurity
) -> None:
    import libvirt

    root = parsed(build_domain_xml(spec(launch_security=security)))
    launch = root.find("launchSecurity")
    assert launch is not None
    if libvirt.getVersion() < 10_005_000:
        with pytest.raises(libvirt.libvirtError, match=security.value):
            test_conn.defineXML(ET.tostring(root, encoding="unicode"))
    root.remove(launch)
    test_conn.defineXML(ET.tostring(root, encoding="unicode")).undefine()
