"""Storage volumes of a pod VM: the qcow2 overlay on the base image and the cidata image.

Volume XML is built by pure functions; the rest are blocking libvirt calls, run by the provider in a
worker thread. Volumes are named after the domain (`<name>-root.qcow2`, `<name>-cloudinit.iso`), so
a leftover of a crashed attempt is recognised by name and replaced.
"""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET
from collections.abc import Callable

import libvirt

from providers.base import ProviderError

_UPLOAD_CHUNK = 256 * 1024


def root_volume_name(domain_name: str) -> str:
    return f"{domain_name}-root.qcow2"


def cidata_volume_name(domain_name: str) -> str:
    return f"{domain_name}-cloudinit.iso"


def _volume_element(name: str, capacity: int, fmt: str) -> ET.Element:
    volume = ET.Element("volume")
    ET.SubElement(volume, "name").text = name
    ET.SubElement(volume, "capacity", unit="bytes").text = str(capacity)
    target = ET.SubElement(volume, "target")
    ET.SubElement(target, "format", type=fmt)
    ET.SubElement(ET.SubElement(target, "permissions"), "mode").text = "0644"
    return volume


def overlay_volume_xml(name: str, capacity: int, backing_path: str, backing_format: str) -> str:
    """A qcow2 volume whose reads fall through to `backing_path` until written."""
    volume = _volume_element(name, capacity, "qcow2")
    backing = ET.SubElement(volume, "backingStore")
    ET.SubElement(backing, "path").text = backing_path
    ET.SubElement(backing, "format", type=backing_format)
    return ET.tostring(volume, encoding="unicode")


def raw_volume_xml(name: str, capacity: int) -> str:
    return ET.tostring(_volume_element(name, capacity, "raw"), encoding="unicode")


def volume_format(volume_xml: str) -> str:
    """The `<target><format type>` of a volume's XML (from libvirtd), "raw" when absent."""
    fmt = ET.fromstring(volume_xml).find("target/format")  # noqa: S314 (libvirtd's own output)
    return (fmt.get("type") if fmt is not None else None) or "raw"


# Writes the bytes into a freshly created volume. libvirt streams them to the daemon by default;
# drivers without volume upload (the test driver) need another way in.
VolumeUploader = Callable[[libvirt.virConnect, libvirt.virStorageVol, bytes], None]


def stream_upload(conn: libvirt.virConnect, volume: libvirt.virStorageVol, data: bytes) -> None:
    """Upload `data` to the start of `volume` over a libvirt stream (works over qemu+ssh too)."""
    stream = conn.newStream(0)
    try:
        volume.upload(stream, 0, len(data), 0)
        view = memoryview(data)
        while view:
            sent = stream.send(view[:_UPLOAD_CHUNK].tobytes())
            if sent <= 0:
                raise ProviderError(f"libvirt stream to volume {volume.name()} accepted no data")
            view = view[sent:]
        stream.finish()
    except BaseException:
        with contextlib.suppress(libvirt.libvirtError):  # never started, or already closed
            stream.abort()
        raise


def delete_named_volume(pool: libvirt.virStoragePool, name: str) -> None:
    """Delete the volume `name` in `pool` if it exists (a leftover of a crashed create)."""
    try:
        pool.storageVolLookupByName(name).delete(0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
            raise


def delete_volume_at(conn: libvirt.virConnect, path: str) -> bool:
    """Delete the volume at `path`; False if there is none (already deleted)."""
    try:
        volume = conn.storageVolLookupByPath(path)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
            return False
        raise
    volume.delete(0)
    return True


def create_overlay(
    pool: libvirt.virStoragePool, name: str, base: libvirt.virStorageVol, min_capacity: int
) -> libvirt.virStorageVol:
    """`name` backed by `base`, as large as the larger of `min_capacity` and the base volume."""
    _, base_capacity, _ = base.info()
    xml = overlay_volume_xml(
        name, max(min_capacity, base_capacity), base.path(), volume_format(base.XMLDesc(0))
    )
    delete_named_volume(pool, name)
    return pool.createXML(xml, 0)


def create_filled_volume(
    conn: libvirt.virConnect, pool: libvirt.virStoragePool, name: str, data: bytes, upload: VolumeUploader
) -> libvirt.virStorageVol:
    """A raw volume `name` holding exactly `data`. If the upload fails the volume is deleted."""
    delete_named_volume(pool, name)
    volume = pool.createXML(raw_volume_xml(name, len(data)), 0)
    try:
        upload(conn, volume, data)
    except BaseException:
        volume.delete(0)
        raise
    return volume
