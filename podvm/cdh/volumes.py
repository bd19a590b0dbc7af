"""The SecureMount request kata-agent sends for an encrypted block volume of a container (its
`Storage`, from a direct-assigned volume or a block emptyDir), as kata-agent's block storage handler
builds it: `driver_options` carrying `encryption_key=ephemeral` (upstream: a fresh LUKS2 device with a
key made in the VM) or `encryption_key=<kbs:///repo/type/tag>` (a KBS key per volume, released after
attestation; the volume keeps its data across pods: the CDH formats it only on first use).

Pure: the agent calls the CDH with what this returns."""

from __future__ import annotations

from protocols.proto import agent_pb2, securemount_pb2

ENCRYPTION_KEY_OPTION = "encryption_key="
EPHEMERAL = "ephemeral"
BLOCK_DRIVERS = ("blk", "blk-ccw", "scsi", "mmioblk", "nvdimm")
# kata-agent's mkfs options for block emptyDirs (CDH's integrity-compatible ext4 defaults).
MKFS_OPTS = "-O ^has_journal -m 0 -i 163840 -I 128"


def encryption_key(storage: agent_pb2.Storage) -> str | None:
    """The storage's `encryption_key=` driver option, or None when it asks for no encryption."""
    keys = [
        o.removeprefix(ENCRYPTION_KEY_OPTION)
        for o in storage.driver_options
        if o.startswith(ENCRYPTION_KEY_OPTION)
    ]
    return keys[-1] if keys else None


def secure_mount_request(storage: agent_pb2.Storage) -> securemount_pb2.SecureMountRequest | None:
    """The CDH request for an encrypted block storage, or None for any other storage. The device is
    the storage's source: `MAJ:MIN` (what kata-agent resolves a PCI path to) or a /dev path."""
    key = encryption_key(storage)
    if key is None or storage.driver not in BLOCK_DRIVERS:
        return None
    options = {
        "sourceType": "empty",
        "targetType": "fileSystem",
        "encryptionType": "luks2",
        "filesystemType": storage.fstype or "ext4",
        "mkfsOpts": MKFS_OPTS,
    }
    options["deviceId" if ":" in storage.source and not storage.source.startswith("/") else "devicePath"] = (
        storage.source
    )
    if key != EPHEMERAL:
        options["key"] = key
    return securemount_pb2.SecureMountRequest(
        volume_type="block-device", options=options, mount_point=storage.mount_point
    )
