"""The scratch disk volume of a pod VM (ENABLE_SCRATCH_SPACE): a sparse raw volume named after the
domain, so it is one of the domain's file disks and goes with them when the domain is deleted."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import libvirt

from providers.libvirt.volumes import delete_named_volume, raw_volume_xml


def scratch_volume_name(domain_name: str) -> str:
    return f"{domain_name}-scratch.raw"


def scratch_volume_xml(name: str, gib: int) -> str:
    """A raw volume of `gib` GiB that allocates nothing up front (the pod VM writes what it uses)."""
    volume = ET.fromstring(raw_volume_xml(name, gib << 30))  # noqa: S314 (our own XML)
    ET.SubElement(volume, "allocation", unit="bytes").text = "0"
    return ET.tostring(volume, encoding="unicode")


def create_scratch_volume(pool: libvirt.virStoragePool, domain_name: str, gib: int) -> libvirt.virStorageVol:
    name = scratch_volume_name(domain_name)
    delete_named_volume(pool, name)  # a crashed attempt's leftover
    return pool.createXML(scratch_volume_xml(name, gib), 0)
