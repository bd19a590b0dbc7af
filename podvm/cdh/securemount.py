"""Upstream's `block-device` secure mount: a block device encrypted with LUKS2, opened with a key
from the KBS (after attestation), a sealed secret, a file, or an ephemeral key made here, then
formatted on first use and mounted where asked.

The key is obtained before the device is touched: a key the KBS will not release (not attested,
resource policy denies, no such resource) fails the request with the device exactly as it was, so no
plaintext is ever written to a device that is not encrypted.

`sourceType: empty` formats the device, as upstream; with a key that is not ephemeral, a device that
already is LUKS2 is opened instead of wiped, so a KBS-keyed volume keeps its data across pods (upstream
would reformat it on every mount).
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import stat
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from podvm.cdh import luks
from podvm.cdh.errors import DeviceError, MountKeyError, ResourceError
from podvm.cdh.mount_request import BlockDeviceMount, KeyKind, KeySpec, SourceType, TargetType

if TYPE_CHECKING:  # the boot-time scratch space (ephemeral keys only) never loads the KBS client
    from podvm.cdh.resources import Resources

log = logging.getLogger(__name__)
EPHEMERAL_KEY_BYTES = 4096  # upstream's random key size
MOUNT_OPTIONS = "nosuid,nodev"
_DEVNAME = re.compile(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)?")
_T = TypeVar("_T")


class BlockDeviceMounter:
    def __init__(self, resources: Resources | None, sys_root: Path = Path("/sys")) -> None:
        """`resources`: where keys come from; None for ephemeral keys only."""
        self._resources = resources
        self._sys = sys_root
        self._lock = asyncio.Lock()  # one cryptsetup/mkfs/mount sequence at a time
        self.timings: dict[str, float] = {}  # seconds per step of the last mount (for bench.boot)

    async def mount(self, request: BlockDeviceMount) -> None:
        key = bytearray(await self._key(request.key))
        try:
            async with self._lock:
                await self._mount(request, key)
        finally:
            key[:] = bytes(len(key))

    async def _key(self, spec: KeySpec) -> bytes:
        if spec.kind is KeyKind.EPHEMERAL:
            return secrets.token_bytes(EPHEMERAL_KEY_BYTES)
        if spec.kind is KeyKind.SEALED:
            raise MountKeyError("Failed to get key: sealed secrets are not supported by this CDH")
        if self._resources is None:
            raise MountKeyError("Failed to get key: only ephemeral keys here")
        try:
            key = await self._resources.get(spec.uri)
        except ResourceError as exc:
            raise MountKeyError(f"Failed to get key: {exc}") from None
        if not key:
            raise MountKeyError("Failed to get key: the key is empty")
        return key

    def device_path(self, request: BlockDeviceMount) -> str:
        """The device to encrypt: `deviceId` (MAJ:MIN, looked up in sysfs) wins over `devicePath`."""
        if request.device_id is not None:
            major, minor = request.device_id
            try:
                uevent = (self._sys / "dev" / "block" / f"{major}:{minor}" / "uevent").read_text()
            except OSError:
                raise DeviceError(f"Failed to get device path with major: {major}, minor: {minor}") from None
            names = [
                line.removeprefix("DEVNAME=") for line in uevent.splitlines() if line.startswith("DEVNAME=")
            ]
            if not names or _DEVNAME.fullmatch(names[0]) is None:
                raise DeviceError(f"Failed to get device path with major: {major}, minor: {minor}")
            return f"/dev/{names[0]}"
        assert request.device_path is not None  # the parser guarantees one of them
        return request.device_path

    async def _step(self, what: str, call: Awaitable[_T]) -> _T:
        began = time.monotonic()
        try:
            return await call
        except luks.CommandFailed as exc:
            raise DeviceError(f"{what} failed: {exc}") from None
        finally:
            self.timings[what] = time.monotonic() - began

    async def _mount(self, request: BlockDeviceMount, key: bytearray) -> None:
        device = self.device_path(request)
        _check_device(device)
        ephemeral = request.key.kind is KeyKind.EPHEMERAL
        fresh = False
        if request.source is SourceType.EMPTY and (ephemeral or not await luks.is_luks2(device)):
            log.info("secure mount: formatting %s as LUKS2 (%s key)", device, request.key.kind.value)
            formatting = luks.format_device(
                device, bytes(key), ephemeral=ephemeral, integrity=request.data_integrity
            )
            await self._step("luksFormat", formatting)
            fresh = True
        elif not await luks.is_luks2(device):
            raise DeviceError(f"{device} is not a LUKS2 device (sourceType encrypted)")
        name = request.mapper_name or f"cdh-{secrets.token_hex(8)}"
        mapped = await self._step("luksOpen", luks.open_device(device, name, bytes(key)))
        try:
            if request.target is TargetType.DEVICE:
                _link(mapped, request.mount_point)
            else:
                if fresh:
                    await self._step("mkfs", luks.run(_mkfs_argv(request, mapped)))
                _directory(request.mount_point)
                fs_type = request.filesystem_type
                mount = ["mount", "-t", fs_type, "-o", MOUNT_OPTIONS, mapped, request.mount_point]
                await self._step("mount", luks.run(mount))
        except BaseException:
            await asyncio.shield(_close_quietly(name))
            raise
        log.info("secure mount: %s on %s (LUKS2, %s)", device, request.mount_point, name)


def _mkfs_argv(request: BlockDeviceMount, device: str) -> list[str]:
    force = "-f" if request.filesystem_type == "xfs" else "-F"
    return [f"mkfs.{request.filesystem_type}", "-q", force, *request.mkfs_opts, device]


def _link(mapped: str, where: str) -> None:
    """targetType device: `where` becomes a symlink to the opened mapping, as upstream."""
    _directory(str(Path(where).parent))
    try:
        Path(where).symlink_to(mapped)
    except OSError as exc:
        raise DeviceError(f"cannot link {where} to {mapped}: {exc.strerror}") from None


def _directory(path: str) -> None:
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DeviceError(f"cannot make {path}: {exc.strerror}") from None


def _check_device(device: str) -> None:
    try:
        mode = Path(device).stat().st_mode
    except OSError as exc:
        raise DeviceError(f"{device}: {exc.strerror}") from None
    if not (stat.S_ISBLK(mode) or stat.S_ISREG(mode)):
        raise DeviceError(f"{device} is not a block device")


async def _close_quietly(name: str) -> None:
    try:
        await luks.close_device(name)
    except luks.CommandFailed as exc:
        log.warning("secure mount: closing %s after a failure: %s", name, exc)
