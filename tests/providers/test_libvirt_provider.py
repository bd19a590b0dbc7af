"""The libvirt provider against libvirt's `test:///default` driver (real libvirt, in-memory state).

Every test opens fresh connections; the driver's state lives while any connection to it is open, so
each test starts from the driver's stock host (one domain "test", pool "default-pool", network
"default"). Volumes go to a `dir` pool whose target is the test's tmp dir. The test driver keeps
volumes in memory and cannot upload (virStorageVolUpload), so the cidata bytes are written to the
volume's path in that dir instead; one test checks that the default stream upload fails cleanly.
"""

from __future__ import annotations

import io
import ipaddress
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pycdlib
import pytest

libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed (it needs libvirt-dev)")

from providers import registry  # noqa: E402
from providers.base import (  # noqa: E402
    OWNER_TAG,
    SANDBOX_TAG,
    CreateRequest,
    InstanceNotFound,
    InstanceSpec,
    InvalidRequestError,
    Provider,
    ProviderError,
)
from providers.libvirt.config import GIB, SETTINGS, LibvirtConfig  # noqa: E402
from providers.libvirt.domain_xml import (  # noqa: E402
    DomainSpec,
    LaunchSecurity,
    LibvirtNetwork,
    build_domain_xml,
    read_metadata,
)
from providers.libvirt.provider import LOOPBACK, PLUGIN, LibvirtProvider  # noqa: E402
from providers.libvirt.volumes import stream_upload  # noqa: E402
from providers.settings import ConfigError, resolve  # noqa: E402

URI = "test:///default"
POOL = "pp-test"
BASE = "podvm-base.qcow2"
USER_DATA = b"#cloud-config\nwrite_files: []\n"


def write_into_pool_dir(conn: Any, volume: Any, data: bytes) -> None:
    """Stands in for virStorageVolUpload, which the test driver lacks: the pool is our tmp dir."""
    Path(volume.path()).write_bytes(data)


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[Any]:
    connection = libvirt.open(URI)
    pool = connection.storagePoolCreateXML(
        f"<pool type='dir'><name>{POOL}</name><target><path>{tmp_path}</path></target></pool>", 0
    )
    for name, gib in ((BASE, 5), ("big-base.qcow2", 20)):
        pool.createXML(
            f"<volume><name>{name}</name><capacity unit='GiB'>{gib}</capacity>"
            "<target><format type='qcow2'/></target></volume>",
            0,
        )
    yield connection
    connection.close()


ProviderFactory = Callable[..., LibvirtProvider]


@pytest.fixture
async def make_provider(conn: Any) -> AsyncIterator[ProviderFactory]:
    made: list[LibvirtProvider] = []

    def make(owner: str = "caa-1", **overrides: Any) -> LibvirtProvider:
        upload = overrides.pop("upload", write_into_pool_dir)
        fields: dict[str, Any] = {"uri": URI, "pool": POOL, "network": "default", "ip_timeout_s": 5.0}
        fields.update(overrides)
        provider = LibvirtProvider(
            libvirt.open(URI), LibvirtConfig(**fields), owner, upload=upload, ip_poll_interval_s=0.01
        )
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.teardown()


def request(name: str = "podvm-a", sandbox: str = "sandbox-a", **spec: Any) -> CreateRequest:
    return CreateRequest(name=name, sandbox_id=sandbox, user_data=USER_DATA, spec=InstanceSpec(**spec))


def volume_names(conn: Any) -> set[str]:
    return set(conn.storagePoolLookupByName(POOL).listVolumes())


def domain_names(conn: Any) -> set[str]:
    return {domain.name() for domain in conn.listAllDomains(0)}


def volume_xml(conn: Any, name: str) -> ET.Element:
    return ET.fromstring(conn.storagePoolLookupByName(POOL).storageVolLookupByName(name).XMLDesc(0))


async def test_create_list_delete(conn: Any, make_provider: ProviderFactory) -> None:
    provider = make_provider()
    instance = await provider.create_instance(request())

    domain = conn.lookupByName("podvm-a")
    assert instance.id == domain.UUIDString() and instance.name == "podvm-a"
    assert instance.sandbox_id == "sandbox-a" and instance.forwarder_port is None
    assert domain.isActive()
    assert instance.ips and all(ip in ipaddress.ip_network("192.168.122.0/24") for ip in instance.ips)

    root = ET.fromstring(domain.XMLDesc(0))
    assert root.find("os/type").get("machine") == "q35"  # type: ignore[union-attr]
    assert (root.findtext("vcpu"), root.findtext("memory")) == ("2", str(8192 * 1024))
    metadata = read_metadata(domain.XMLDesc(0))
    assert metadata is not None
    assert dict(metadata.tags) == {OWNER_TAG: "caa-1", SANDBOX_TAG: "sandbox-a"}

    assert volume_names(conn) == {BASE, "big-base.qcow2", "podvm-a-root.qcow2", "podvm-a-cloudinit.iso"}
    overlay = volume_xml(conn, "podvm-a-root.qcow2")
    assert overlay.findtext("backingStore/path", "").endswith(f"/{BASE}")
    assert overlay.find("backingStore/format").get("type") == "qcow2"  # type: ignore[union-attr]
    assert int(overlay.findtext("capacity", "0")) == 10 * GIB  # max(10 GiB root size, 5 GiB base)

    cidata_path = root.find("devices/disk[@device='cdrom']/source").get("file", "")  # type: ignore[union-attr]
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(Path(cidata_path).read_bytes()))
    assert iso.pvd.volume_identifier.rstrip(b" ") == b"cidata"
    for name, expected in (("user-data", USER_DATA), ("meta-data", b"local-hostname: podvm-a")):
        out = io.BytesIO()
        iso.get_file_from_iso_fp(out, rr_path=f"/{name}")
        assert out.getvalue() == expected

    listed = await provider.list_instances()
    assert [(i.id, i.name, i.sandbox_id) for i in listed] == [(instance.id, "podvm-a", "sandbox-a")]
    assert listed[0].ips == instance.ips

    await provider.delete_instance(instance.id)
    with pytest.raises(libvirt.libvirtError):
        conn.lookupByUUIDString(instance.id)
    assert volume_names(conn) == {BASE, "big-base.qcow2"}
    assert await provider.list_instances() == []
    with pytest.raises(InstanceNotFound):
        await provider.delete_instance(instance.id)


async def test_pod_resources_and_image_annotation(conn: Any, make_provider: ProviderFactory) -> None:
    provider = make_provider(cpuset="0-1")
    await provider.create_instance(request(vcpus=4, memory_mib=2048, image="big-base.qcow2"))
    root = ET.fromstring(conn.lookupByName("podvm-a").XMLDesc(0))
    assert (root.findtext("vcpu"), root.findtext("memory")) == ("4", str(2048 * 1024))
    assert root.find("vcpu").get("cpuset") == "0-1"  # type: ignore[union-attr]
    overlay = volume_xml(conn, "podvm-a-root.qcow2")
    assert overlay.findtext("backingStore/path", "").endswith("/big-base.qcow2")
    assert int(overlay.findtext("capacity", "0")) == 20 * GIB  # the base is larger than the root size


def add_boot_volumes(conn: Any) -> dict[str, str]:
    """Kernel and initrd volumes in the pool, as published with the image; name -> path."""
    pool = conn.storagePoolLookupByName(POOL)
    paths = {}
    for name in ("podvm-vmlinuz", "podvm-initrd.img"):
        volume = pool.createXML(
            f"<volume><name>{name}</name><capacity unit='bytes'>4096</capacity>"
            "<target><format type='raw'/></target></volume>",
            0,
        )
        paths[name] = volume.path()
    return paths


async def test_direct_kernel_boot_with_the_base_image_only(conn: Any, make_provider: ProviderFactory) -> None:
    paths = add_boot_volumes(conn)
    provider = make_provider(
        vol_name=BASE,
        kernel_vol="podvm-vmlinuz",
        initrd_vol="podvm-initrd.img",
        kernel_cmdline="root=/dev/vda2",
    )
    await provider.create_instance(request())
    root = ET.fromstring(conn.lookupByName("podvm-a").XMLDesc(0))
    assert root.findtext("os/kernel") == paths["podvm-vmlinuz"]
    assert root.findtext("os/initrd") == paths["podvm-initrd.img"]
    assert root.findtext("os/cmdline") == "root=/dev/vda2" and root.find("os/loader") is None
    # A pod naming another image boots that image's own kernel, through the firmware.
    await provider.create_instance(request("podvm-b", "sandbox-b", image="big-base.qcow2"))
    other = ET.fromstring(conn.lookupByName("podvm-b").XMLDesc(0))
    assert other.find("os/kernel") is None and other.find("os/loader") is not None


def test_plugin_reports_missing_boot_volumes(conn: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        PLUGIN.create(
            plugin_values(LIBVIRT_KERNEL_VOL_NAME="nokernel", LIBVIRT_INITRD_VOL_NAME="noinitrd"), "caa-1"
        )
    assert [problem.split(":")[0] for problem in caught.value.problems] == [
        "LIBVIRT_KERNEL_VOL_NAME",
        "LIBVIRT_INITRD_VOL_NAME",
    ]


async def test_lists_only_its_own_instances(conn: Any, make_provider: ProviderFactory) -> None:
    mine, theirs = make_provider("caa-1"), make_provider("caa-2")
    a = await mine.create_instance(request("podvm-a", "sandbox-a"))
    b = await theirs.create_instance(request("podvm-b", "sandbox-b"))
    assert [i.id for i in await mine.list_instances()] == [a.id]
    assert [i.id for i in await theirs.list_instances()] == [b.id]
    assert "test" in domain_names(conn)  # the driver's own domain is listed by neither


async def test_retried_create_returns_the_existing_domain(conn: Any, make_provider: ProviderFactory) -> None:
    provider = make_provider()
    first = await provider.create_instance(request())
    volumes_before = volume_names(conn)
    again = await provider.create_instance(request())
    assert again.id == first.id
    assert [d.name() for d in conn.listAllDomains(0)].count("podvm-a") == 1
    assert volume_names(conn) == volumes_before


async def test_retry_after_a_crash_before_start_starts_the_domain(
    conn: Any, make_provider: ProviderFactory
) -> None:
    provider = make_provider()
    first = await provider.create_instance(request())
    conn.lookupByUUIDString(first.id).destroy()  # as if the adaptor died between define and start
    again = await make_provider().create_instance(request())
    assert again.id == first.id and again.ips
    assert conn.lookupByUUIDString(first.id).isActive()


async def test_retry_after_a_crash_before_define_replaces_leftover_volumes(
    conn: Any, make_provider: ProviderFactory
) -> None:
    pool = conn.storagePoolLookupByName(POOL)
    for name in ("podvm-a-root.qcow2", "podvm-a-cloudinit.iso"):
        pool.createXML(f"<volume><name>{name}</name><capacity>1</capacity></volume>", 0)
    instance = await make_provider().create_instance(request())
    assert conn.lookupByName("podvm-a").UUIDString() == instance.id
    assert volume_xml(conn, "podvm-a-root.qcow2").findtext("backingStore/path", "").endswith(f"/{BASE}")


async def test_same_name_of_another_sandbox_or_owner_is_refused(
    conn: Any, make_provider: ProviderFactory
) -> None:
    await make_provider("caa-1").create_instance(request("podvm-a", "sandbox-a"))
    with pytest.raises(InvalidRequestError, match="already exists"):
        await make_provider("caa-1").create_instance(request("podvm-a", "sandbox-other"))
    with pytest.raises(InvalidRequestError, match="already exists"):
        await make_provider("caa-2").create_instance(request("podvm-a", "sandbox-a"))
    conn.defineXML(
        "<domain type='test'><name>web</name><memory>1024</memory><os><type>hvm</type></os></domain>"
    )
    with pytest.raises(InvalidRequestError, match="already exists"):
        await make_provider().create_instance(request("web"))
    assert not conn.lookupByName("web").isActive()  # left as it was


async def test_delete_unknown_or_malformed_id(make_provider: ProviderFactory) -> None:
    provider = make_provider()
    with pytest.raises(InstanceNotFound):
        await provider.delete_instance("0b5d2c7e-56f1-4a8e-9a57-3c2d1e0f9a88")
    with pytest.raises(InstanceNotFound):
        await provider.delete_instance("not-a-uuid")


async def test_delete_refuses_a_domain_peerpods_did_not_create(
    conn: Any, make_provider: ProviderFactory
) -> None:
    stock = conn.lookupByName("test")
    with pytest.raises(InvalidRequestError, match="not created by peerpods"):
        await make_provider().delete_instance(stock.UUIDString())
    assert stock.isActive()


async def test_user_network_reports_loopback_and_the_forwarded_port(
    conn: Any, make_provider: ProviderFactory
) -> None:
    provider = make_provider(user_network=True)
    instance = await provider.create_instance(request())
    port = instance.forwarder_port
    assert instance.ips == (LOOPBACK,)
    assert port is not None and 0 < port < 65536
    metadata = read_metadata(conn.lookupByName("podvm-a").XMLDesc(0))
    assert metadata is not None and metadata.forwarded_port == port
    assert [(i.ips, i.forwarder_port) for i in await provider.list_instances()] == [((LOOPBACK,), port)]
    assert (await make_provider(user_network=True).create_instance(request())).forwarder_port == port


async def test_no_ip_in_time_fails_and_removes_the_domain(conn: Any, make_provider: ProviderFactory) -> None:
    # A domain of ours without a NIC (as if left by a crash) never gets an address.
    text = build_domain_xml(
        DomainSpec(
            name="podvm-a",
            vcpus=1,
            memory_mib=512,
            root_disk="/nowhere/podvm-a-root.qcow2",
            cidata_disk="/nowhere/podvm-a-cloudinit.iso",
            network=LibvirtNetwork("default"),
            tags={OWNER_TAG: "caa-1", SANDBOX_TAG: "sandbox-a"},
        )
    )
    root = ET.fromstring(text)
    devices = root.find("devices")
    assert devices is not None
    devices.remove(devices.find("interface"))  # type: ignore[arg-type]
    conn.defineXML(ET.tostring(root, encoding="unicode"))
    with pytest.raises(ProviderError, match="no IP address within"):
        await make_provider(ip_timeout_s=0.05).create_instance(request())
    assert "podvm-a" not in domain_names(conn)


async def test_failed_upload_leaves_nothing_behind(conn: Any, make_provider: ProviderFactory) -> None:
    provider = make_provider(upload=stream_upload)  # the production default
    with pytest.raises(ProviderError, match=r"podvm-a-cloudinit\.iso.*not supported"):
        await provider.create_instance(request())
    assert volume_names(conn) == {BASE, "big-base.qcow2"}
    assert "podvm-a" not in domain_names(conn)


@pytest.mark.skipif(libvirt.getVersion() >= 10_005_000, reason="this libvirt knows SEV-SNP")
async def test_libvirt_rejecting_the_domain_leaves_nothing_behind(
    conn: Any, make_provider: ProviderFactory
) -> None:
    provider = make_provider(launch_security=LaunchSecurity.SEV_SNP)
    with pytest.raises(ProviderError, match=r"defining domain podvm-a: .*sev-snp"):
        await provider.create_instance(request())
    assert volume_names(conn) == {BASE, "big-base.qcow2"}
    assert "podvm-a" not in domain_names(conn)


async def test_missing_base_volume_is_an_invalid_request(conn: Any, make_provider: ProviderFactory) -> None:
    with pytest.raises(InvalidRequestError, match=r"'no-such-image\.qcow2' not found in pool"):
        await make_provider().create_instance(request(image="no-such-image.qcow2"))
    assert volume_names(conn) == {BASE, "big-base.qcow2"}


async def test_invalid_name_or_resources_are_refused(conn: Any, make_provider: ProviderFactory) -> None:
    for name in ("../etc/passwd", "podvm-a\n"):
        with pytest.raises(InvalidRequestError, match="not a valid domain name"):
            await make_provider().create_instance(request(name))
    with pytest.raises(InvalidRequestError, match="must not be negative"):
        await make_provider().create_instance(request(vcpus=-1))
    assert volume_names(conn) == {BASE, "big-base.qcow2"}


# -- the plugin: start-up checks against the host ----------------------------------------------


def plugin_values(**environ: str) -> dict[str, Any]:
    return resolve(SETTINGS, None, {"LIBVIRT_URI": URI, "LIBVIRT_POOL": "default-pool", **environ})


async def test_plugin_builds_a_working_provider(conn: Any) -> None:
    plugin = registry.load("libvirt")
    assert plugin is PLUGIN and plugin.name == "libvirt"
    provider = plugin.create(plugin_values(), "caa-1")
    try:
        assert isinstance(provider, Provider)
        assert await provider.list_instances() == []
    finally:
        await provider.teardown()


def test_plugin_reports_missing_pool_and_network_together(conn: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        PLUGIN.create(plugin_values(LIBVIRT_POOL="nope", LIBVIRT_NET="nonet"), "caa-1")
    assert [problem.split(":")[0] for problem in caught.value.problems] == ["LIBVIRT_POOL", "LIBVIRT_NET"]


def test_plugin_refuses_cvms_it_cannot_name_on_this_host(conn: Any) -> None:
    # The test driver's host is an i686: no default TEE, so no silently non-confidential VM.
    with pytest.raises(ConfigError, match="LIBVIRT_LAUNCH_SECURITY is empty and a i686 host"):
        PLUGIN.create(plugin_values(DISABLECVM="false"), "caa-1")


def test_plugin_reports_an_unreachable_libvirt() -> None:
    with pytest.raises(ProviderError, match=r"cannot connect to libvirt at test:///no/such/file\.xml"):
        PLUGIN.create(plugin_values(LIBVIRT_URI="test:///no/such/file.xml"), "caa-1")
