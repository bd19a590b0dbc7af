"""The SecureMount request parser: upstream's option names accepted, anything else a typed error
(fuzzed: no other exception for any input)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from podvm.cdh.errors import MountRequestError
from podvm.cdh.mount_request import (
    BlockDeviceMount,
    KeyKind,
    SourceType,
    TargetType,
    parse_secure_mount,
)

BASE = {
    "devicePath": "/dev/vdb",
    "sourceType": "empty",
    "targetType": "fileSystem",
    "encryptionType": "luks2",
}
OPTION_NAMES = [
    "deviceId", "devicePath", "sourceType", "targetType", "encryptionType", "key",
    "dataIntegrity", "filesystemType", "mkfsOpts", "mapperName", "other",
]  # fmt: skip


def parse(options: dict[str, str], mount_point: str = "/run/scratch") -> BlockDeviceMount:
    return parse_secure_mount("block-device", options, [], mount_point)


def test_upstream_ephemeral_request() -> None:
    mount = parse({**BASE, "mkfsOpts": "-O ^has_journal -m 0", "dataIntegrity": "true"})
    assert mount.key.kind is KeyKind.EPHEMERAL
    assert (mount.source, mount.target) == (SourceType.EMPTY, TargetType.FILE_SYSTEM)
    assert mount.device_path == "/dev/vdb" and mount.filesystem_type == "ext4"
    assert mount.mkfs_opts == ("-O", "^has_journal", "-m", "0") and mount.data_integrity


def test_kbs_key_and_device_id() -> None:
    mount = parse(
        {**BASE, "deviceId": "252:16", "key": "kbs:///default/volumes/db", "sourceType": "encrypted"}
    )
    assert mount.device_id == (252, 16)
    assert (mount.key.kind, mount.key.uri) == (KeyKind.RESOURCE, "kbs:///default/volumes/db")


def test_sealed_secret_is_never_shown() -> None:
    mount = parse({**BASE, "key": "sealed.e30.eyJ0eXBlIjoidmF1bHQifQ.c2ln"})
    assert mount.key.kind is KeyKind.SEALED
    assert "eyJ0" not in repr(mount)


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"encryptionType": "zfs"}, "encryptionType must be `luks2`"),
        ({"sourceType": "full"}, "sourceType must be"),
        ({"targetType": None}, "targetType must be"),
        ({"devicePath": None}, "Either `device_id` or `device_path`"),
        ({"devicePath": "dev/vdb"}, "absolute path"),
        ({"devicePath": "/dev/../etc/passwd"}, "absolute path"),
        ({"deviceId": "252"}, "MAJ:MIN"),
        ({"key": "https://example.com/key"}, "scheme of the key uri"),
        ({"key": "kbs:///default/../key"}, "not a KBS resource URI"),
        ({"key": "", "sourceType": "encrypted"}, "ephemeral key cannot open"),
        ({"filesystemType": "vfat"}, "filesystemType must be"),
        ({"dataIntegrity": "yes"}, "dataIntegrity must be"),
        ({"mkfsOpts": "-E $(reboot)"}, "mkfsOpts"),
        ({"mapperName": "../control"}, "mapperName"),
    ],
)
def test_refused(change: dict[str, str | None], said: str) -> None:
    options = {k: v for k, v in {**BASE, **change}.items() if v is not None}
    with pytest.raises(MountRequestError) as caught:
        parse(options)
    assert said in str(caught.value)
    assert str(caught.value).startswith("Error when mounting Block device: ")


def test_other_volume_types_and_mount_points_refused() -> None:
    with pytest.raises(MountRequestError, match="storage type"):
        parse_secure_mount("alibaba-cloud-oss", BASE, [], "/mnt")
    for bad in ("", "relative", "/", "/a/../b", "/a\0b"):
        with pytest.raises(MountRequestError, match="mount_point"):
            parse(BASE, bad)


texts = st.one_of(st.text(max_size=80), st.sampled_from(["", "luks2", "empty", "encrypted", "device",
    "fileSystem", "kbs:///a/b/c", "sealed.x", "file:///k", "/dev/vdb", "7:0", "true", "ext4"]))  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(
    volume_type=st.sampled_from(["block-device", "", "x"]),
    options=st.dictionaries(
        st.one_of(st.sampled_from(OPTION_NAMES), st.text(max_size=70)), texts, max_size=12
    ),
    flags=st.lists(st.text(max_size=10), max_size=40),
    mount_point=texts,
)
def test_fuzz_typed_errors_only(
    volume_type: str, options: dict[str, str], flags: list[str], mount_point: str
) -> None:
    try:
        mount = parse_secure_mount(volume_type, options, flags, mount_point)
    except MountRequestError:
        return
    assert mount.mount_point.startswith("/") and ".." not in mount.mount_point.split("/")
    assert (mount.device_id is None) != (mount.device_path is None)
    assert not (mount.key.kind is KeyKind.EPHEMERAL and mount.source is SourceType.ENCRYPTED)
