"""ENABLE_SCRATCH_SPACE on every cloud: the second disk is in the create request on the wire (EBS
block device mapping, Azure data disk, GCP attached disk, libvirt volume), the pod VM sees it, and it
is gone after the instance is deleted (DeleteOnTermination, deleteOption Delete, autoDelete, the
domain's file disks)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from protocols.scratch_disk import AWS_SCRATCH_DEVICE, SCRATCH_DISK_NAME
from tests.fakes.gce import FakeCompute
from tests.providers.test_aws import aws_ami, aws_ec2, aws_moto_url, aws_url, capture, make_provider
from tests.providers.test_aws import request as aws_request
from tests.providers.test_azure import Cloud, cloud, fake, vm_body_sent
from tests.providers.test_azure import request as azure_request
from tests.providers.test_gcp import fake as gce
from tests.providers.test_gcp import plugin_provider
from tests.providers.test_gcp import request as gcp_request

__all__ = ["aws_ami", "aws_ec2", "aws_moto_url", "aws_url", "cloud", "fake", "gce"]  # fixtures used here


async def test_aws_ebs_scratch_volume_deleted_on_termination(
    aws_url: str, aws_ami: str, aws_ec2: Any
) -> None:
    provider = make_provider(aws_url, aws_ami)
    wire = capture(provider)
    instance = await provider.create_instance(replace(aws_request(), scratch_space_gib=7))
    [sent] = wire.sent("RunInstances")
    assert sent["BlockDeviceMapping.2.DeviceName"] == AWS_SCRATCH_DEVICE
    assert sent["BlockDeviceMapping.2.Ebs.VolumeSize"] == "7"
    assert sent["BlockDeviceMapping.2.Ebs.DeleteOnTermination"] == "true"
    attached = {"Name": "attachment.instance-id", "Values": [instance.id]}
    volumes = aws_ec2.describe_volumes(Filters=[attached])["Volumes"]
    assert sorted(v["Size"] for v in volumes) == [7, 30]
    scratch_id = next(v["VolumeId"] for v in volumes if v["Size"] == 7)
    await provider.delete_instance(instance.id)
    remaining = aws_ec2.describe_volumes(Filters=[{"Name": "volume-id", "Values": [scratch_id]}])["Volumes"]
    assert remaining == []
    await provider.teardown()


async def test_aws_no_scratch_volume_unless_asked(aws_url: str, aws_ami: str) -> None:
    provider = make_provider(aws_url, aws_ami)
    wire = capture(provider)
    await provider.create_instance(aws_request())
    assert "BlockDeviceMapping.2.DeviceName" not in wire.sent("RunInstances")[0]
    await provider.teardown()


async def test_azure_data_disk_deleted_with_the_vm(cloud: Cloud) -> None:
    provider = cloud.provider()
    instance = await provider.create_instance(replace(azure_request(), scratch_space_gib=8))
    [data_disk] = vm_body_sent(cloud)["properties"]["storageProfile"]["dataDisks"]
    assert data_disk == {
        "lun": 0,
        "name": "podvm-a-scratch",
        "createOption": "Empty",
        "diskSizeGB": 8,
        "caching": "None",
        "deleteOption": "Delete",
        "managedDisk": {"storageAccountType": "Premium_LRS"},
    }
    assert "podvm-a-scratch" in cloud.names()
    await provider.delete_instance(instance.id)
    assert cloud.names() == []


async def test_azure_no_data_disk_unless_asked(cloud: Cloud) -> None:
    await cloud.provider().create_instance(azure_request())
    assert "dataDisks" not in vm_body_sent(cloud)["properties"]["storageProfile"]


async def test_gcp_attached_disk_auto_deleted(gce: FakeCompute) -> None:
    provider = plugin_provider(gce)
    created = await provider.create_instance(replace(gcp_request(), scratch_space_gib=9))
    [insert] = [r for r in gce.requests if r.api == "instances.insert"]
    boot, scratch = insert.body["disks"]
    assert boot["boot"] is True
    assert scratch == {
        "autoDelete": True,
        "boot": False,
        "deviceName": SCRATCH_DISK_NAME,
        "initializeParams": {"diskSizeGb": "9", "diskType": "zones/us-central1-a/diskTypes/pd-standard"},
    }
    assert sorted(gce.disks()) == ["podvm-web-5f0c3b2a", f"podvm-web-5f0c3b2a-{SCRATCH_DISK_NAME}"]
    await provider.delete_instance(created.id)
    assert gce.disks() == {}
    await provider.teardown()


libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed (it needs libvirt-dev)")


async def test_libvirt_scratch_volume_is_a_domain_disk_and_goes_with_it(tmp_path: Path) -> None:
    from providers.base import CreateRequest
    from providers.libvirt.config import LibvirtConfig
    from providers.libvirt.provider import LibvirtProvider
    from tests.providers.test_libvirt_provider import POOL, URI, USER_DATA, write_into_pool_dir

    conn = libvirt.open(URI)
    pool = conn.storagePoolCreateXML(
        f"<pool type='dir'><name>{POOL}</name><target><path>{tmp_path}</path></target></pool>", 0
    )
    pool.createXML(
        "<volume><name>podvm-base.qcow2</name><capacity unit='GiB'>5</capacity>"
        "<target><format type='qcow2'/></target></volume>",
        0,
    )
    config = LibvirtConfig(uri=URI, pool=POOL, network="default", ip_timeout_s=5.0)
    provider = LibvirtProvider(
        libvirt.open(URI), config, "caa-1", upload=write_into_pool_dir, ip_poll_interval_s=0.01
    )
    try:
        request = CreateRequest(name="podvm-s", sandbox_id="sb-s", user_data=USER_DATA, scratch_space_gib=3)
        instance = await provider.create_instance(request)
        volume = ET.fromstring(pool.storageVolLookupByName("podvm-s-scratch.raw").XMLDesc(0))
        assert volume.findtext("capacity") == str(3 << 30)
        assert volume.find("target/format").get("type") == "raw"  # type: ignore[union-attr]
        disks = ET.fromstring(conn.lookupByName("podvm-s").XMLDesc(0)).findall("devices/disk")
        [scratch] = [d for d in disks if d.findtext("serial") == SCRATCH_DISK_NAME]
        assert scratch.find("source").get("file", "").endswith("/podvm-s-scratch.raw")  # type: ignore[union-attr]
        assert scratch.find("target").get("bus") == "virtio"  # type: ignore[union-attr]
        await provider.delete_instance(instance.id)
        assert set(pool.listVolumes()) == {"podvm-base.qcow2"}
    finally:
        await provider.teardown()
        conn.close()
