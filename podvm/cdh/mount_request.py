"""A `SecureMountRequest` checked without touching anything: upstream's `block-device` volume type
(confidential-data-hub `storage/volume_type/blockdevice`) with its option names, LUKS2 only. Pure, so
it is fuzzed: any input gives a `BlockDeviceMount` or a `MountRequestError`, nothing else.

The request comes from kata-agent, which relays what the host asked for: every field is bounded and
only what can be passed to cryptsetup, mkfs and mount as argv (never a shell) is accepted."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import PurePosixPath
from typing import TypeVar

from podvm.cdh.errors import MountRequestError
from protocols.kbs_client.errors import KbsClientError
from protocols.kbs_client.resource_uri import parse_resource_uri

VOLUME_TYPE_BLOCK_DEVICE = "block-device"
FILESYSTEMS = ("ext4", "ext3", "ext2", "xfs")
MAX_OPTIONS = 32
MAX_FLAGS = 32
MAX_TEXT = 4096
MAX_MKFS_ARGS = 32
_DEVICE_ID = re.compile(r"(\d{1,10}):(\d{1,10})")
_MAPPER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_MKFS_ARG = re.compile(r"[A-Za-z0-9_=,.^:+/-]{1,128}")
_E = TypeVar("_E", bound=Enum)


class KeyKind(Enum):
    EPHEMERAL = "ephemeral"  # random, made in the VM, never leaves it: the device is wiped
    RESOURCE = "kbs"  # a KBS resource, released after attestation
    FILE = "file"  # a file in the pod VM
    SEALED = "sealed"  # a sealed secret (`sealed.` JWS)


class SourceType(Enum):
    EMPTY = "empty"
    ENCRYPTED = "encrypted"


class TargetType(Enum):
    DEVICE = "device"
    FILE_SYSTEM = "fileSystem"


@dataclass(frozen=True, slots=True)
class KeySpec:
    kind: KeyKind
    uri: str = ""

    def __repr__(self) -> str:  # a sealed secret is the secret itself: never in a log
        return f"KeySpec({self.kind.value})"


@dataclass(frozen=True, slots=True)
class BlockDeviceMount:
    """One LUKS2 block device to open (formatting it first when `source` is empty) and mount."""

    mount_point: str
    source: SourceType
    target: TargetType
    key: KeySpec
    device_path: str | None = None
    device_id: tuple[int, int] | None = None  # wins over device_path, as upstream
    data_integrity: bool = False
    filesystem_type: str = "ext4"
    mkfs_opts: tuple[str, ...] = ()
    mapper_name: str | None = None


def parse_secure_mount(
    volume_type: str, options: Mapping[str, str], flags: Sequence[str], mount_point: str
) -> BlockDeviceMount:
    """The request's mount, or `MountRequestError` saying what is wrong (upstream's option names)."""
    if volume_type != VOLUME_TYPE_BLOCK_DEVICE:
        raise MountRequestError(f"Failed to recognize the storage type: {volume_type[:64]!r}")
    if len(options) > MAX_OPTIONS or len(flags) > MAX_FLAGS:
        raise MountRequestError("too many options or flags")
    for name, value in options.items():
        if len(name) > 64 or len(value) > MAX_TEXT or "\0" in value:
            raise MountRequestError(f"option {name[:64]!r} is too long or has a NUL")
    encryption = options.get("encryptionType")
    if encryption != "luks2":
        raise MountRequestError(f"encryptionType must be `luks2`, not {_shown(encryption)}")
    source = _choice(options, "sourceType", SourceType)
    target = _choice(options, "targetType", TargetType)
    key = parse_key(options.get("key", ""))
    if key.kind is KeyKind.EPHEMERAL and source is SourceType.ENCRYPTED:
        raise MountRequestError("an ephemeral key cannot open an encrypted device (sourceType encrypted)")
    device_id, device_path = _device(options)
    filesystem = options.get("filesystemType") or "ext4"
    if filesystem not in FILESYSTEMS:
        raise MountRequestError(
            f"filesystemType must be one of {', '.join(FILESYSTEMS)}, not {filesystem[:64]!r}"
        )
    return BlockDeviceMount(
        mount_point=_absolute("mount_point", mount_point),
        source=source,
        target=target,
        key=key,
        device_path=device_path,
        device_id=device_id,
        data_integrity=_boolean(options, "dataIntegrity"),
        filesystem_type=filesystem,
        mkfs_opts=_mkfs_opts(options.get("mkfsOpts", "")),
        mapper_name=_mapper_name(options.get("mapperName")),
    )


def parse_key(text: str) -> KeySpec:
    """Upstream's key schemes: none (ephemeral), `sealed.`, a KBS resource URI, `file://`."""
    if not text:
        return KeySpec(KeyKind.EPHEMERAL)
    if text.startswith("sealed."):
        return KeySpec(KeyKind.SEALED, text)
    if text.startswith("file://"):
        return KeySpec(KeyKind.FILE, "file://" + _absolute("key", text.removeprefix("file://")))
    if text.startswith("kbs") and "://" in text:
        try:
            return KeySpec(KeyKind.RESOURCE, str(parse_resource_uri(text)))
        except KbsClientError as exc:
            raise MountRequestError(f"key is not a KBS resource URI: {exc}") from None
    raise MountRequestError("The scheme of the key uri should be `kbs`, `file` or `sealed`")


def _shown(value: str | None) -> str:
    return "nothing" if value is None else repr(value[:64])


def _choice(options: Mapping[str, str], name: str, kind: type[_E]) -> _E:
    value = options.get(name)
    for member in kind:
        if member.value == value:
            return member
    allowed = " or ".join(f"`{m.value}`" for m in kind)
    raise MountRequestError(f"{name} must be {allowed}, not {_shown(value)}")


def _boolean(options: Mapping[str, str], name: str) -> bool:
    value = options.get(name, "false") or "false"
    if value not in ("true", "false"):
        raise MountRequestError(f"{name} must be `true` or `false`, not {value[:64]!r}")
    return value == "true"


def _device(options: Mapping[str, str]) -> tuple[tuple[int, int] | None, str | None]:
    device_id = options.get("deviceId")
    if device_id:
        match = _DEVICE_ID.fullmatch(device_id)
        if match is None or max(int(match[1]), int(match[2])) >= 1 << 32:
            raise MountRequestError("device_id must be in the format of `MAJ:MIN")
        return (int(match[1]), int(match[2])), None
    path = options.get("devicePath")
    if not path:
        raise MountRequestError("Either `device_id` or `device_path` must be specified")
    return None, _absolute("devicePath", path)


def _absolute(name: str, path: str) -> str:
    pure = PurePosixPath(path)
    if not path.startswith("/") or ".." in pure.parts or "\0" in path or len(path) > MAX_TEXT:
        raise MountRequestError(f"{name} must be an absolute path without `..`, not {path[:64]!r}")
    if pure == PurePosixPath("/"):
        raise MountRequestError(f"{name} must not be /")
    return str(pure)


def _mkfs_opts(text: str) -> tuple[str, ...]:
    args = tuple(text.split())
    if len(args) > MAX_MKFS_ARGS or not all(_MKFS_ARG.fullmatch(arg) for arg in args):
        raise MountRequestError("mkfsOpts: at most 32 plain arguments ([A-Za-z0-9_=,.^:+/-])")
    return args


def _mapper_name(name: str | None) -> str | None:
    if not name:
        return None
    if _MAPPER_NAME.fullmatch(name) is None:
        raise MountRequestError(f"mapperName must be [A-Za-z0-9_.-], at most 63, not {name[:64]!r}")
    return name
