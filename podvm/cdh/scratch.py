"""`python -m podvm.cdh.scratch`: the pod VM's scratch space (ENABLE_SCRATCH_SPACE), at boot before
the agent. The disk the provider attached is encrypted as LUKS2 with an ephemeral key that never
leaves the VM (the CDH's own secure mount), formatted and mounted where image layers go
(/run/kata-containers/image); the stand-in agent's container directories (rootfs, writable layers)
are bind-mounted from it. Without the marker file it does nothing; when the marker is there and
the disk is missing or cannot be encrypted it fails, so the agent (which requires this unit) never
starts on plaintext storage.

Prints `peerpods-scratch-space: ready in <s> s (<step> <s>, ...)` on its output (the console) for
bench/boot.py; the total counts from the interpreter's start.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from podvm.cdh import luks
from podvm.cdh.errors import CdhError
from podvm.cdh.mount_request import parse_secure_mount
from podvm.cdh.securemount import BlockDeviceMounter
from protocols import version
from protocols.scratch_disk import SCRATCH_DISK_NAME, SCRATCH_SPACE_MARKER

log = logging.getLogger(__name__)
MAPPER_NAME = "scratch"
IMAGE_DIR = Path("/run/kata-containers/image")
# Directories bind-mounted from the scratch file system: the stand-in agent's containers.
BIND_DIRS = {"standin-agent": Path("/run/peerpods-standin-agent")}
# Names the disk has where the provider could choose one (libvirt serial, GCP device name).
PREFERRED_IDS = (f"virtio-{SCRATCH_DISK_NAME}", f"google-{SCRATCH_DISK_NAME}", "scsi-0Google_PersistentDisk_")
_SKIPPED_KINDS = ("loop", "ram", "dm-", "sr", "zram", "md", "nbd")
# Fast mkfs: lazy inode tables and journal, no reserved blocks (nobody else writes here).
MKFS_OPTS = "-m 0 -E lazy_itable_init=1,lazy_journal_init=1,nodiscard"


class ScratchError(Exception):
    """No scratch disk to encrypt, or more than one candidate."""


@dataclass(frozen=True, slots=True)
class Disk:
    """A whole disk as /sys/block shows it."""

    name: str
    ids: tuple[str, ...] = ()  # /dev/disk/by-id names pointing at it
    partitioned: bool = False
    in_use: bool = False  # mounted, or holding a mounted partition (the root disk)
    removable: bool = False
    read_only: bool = False
    size_sectors: int = 0


def choose_disk(disks: Sequence[Disk]) -> str:
    """The scratch disk: the one named as the provider named it, else the only blank disk
    (no partitions, not in use, writable, not removable) — an EBS volume or Azure data disk."""
    blank = [
        d
        for d in disks
        if not (d.partitioned or d.in_use or d.removable or d.read_only or d.size_sectors == 0)
        and not d.name.startswith(_SKIPPED_KINDS)
    ]
    named = [d for d in blank if any(i.startswith(p) for i in d.ids for p in PREFERRED_IDS)]
    if len(named) == 1:
        return named[0].name
    if len(blank) == 1:
        return blank[0].name
    if not blank:
        raise ScratchError("no blank disk to use as scratch space (did the provider attach one?)")
    raise ScratchError(
        f"several blank disks, none named {SCRATCH_DISK_NAME}: {', '.join(d.name for d in blank)}"
    )


def read_disks(sys_block: Path, by_id: Path, mounts: str) -> list[Disk]:
    mounted = {
        line.split()[0].removeprefix("/dev/") for line in mounts.splitlines() if line.startswith("/dev/")
    }
    ids: dict[str, list[str]] = {}
    if by_id.is_dir():
        for link in by_id.iterdir():
            ids.setdefault(link.resolve().name, []).append(link.name)
    disks = []
    for entry in sorted(sys_block.iterdir()):
        name = entry.name
        parts = [p.name for p in entry.iterdir() if p.name.startswith(name) and (p / "partition").exists()]
        disks.append(
            Disk(
                name=name,
                ids=tuple(sorted(ids.get(name, []))),
                partitioned=bool(parts),
                in_use=name in mounted or any(p in mounted for p in parts),
                removable=_flag(entry / "removable"),
                read_only=_flag(entry / "ro"),
                size_sectors=int(_text(entry / "size") or 0),
            )
        )
    return disks


def _text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _flag(path: Path) -> bool:
    return _text(path) == "1"


def scratch_request(device: str) -> Mapping[str, str]:
    """The secure mount options for the scratch disk: upstream's names, ephemeral key (none given)."""
    return {
        "devicePath": device,
        "sourceType": "empty",
        "targetType": "fileSystem",
        "encryptionType": "luks2",
        "filesystemType": "ext4",
        "mapperName": MAPPER_NAME,
        "mkfsOpts": MKFS_OPTS,
    }


def _find_disk(sys_block: Path, by_id: Path) -> str:
    mounts = Path("/proc/mounts").read_text()
    return f"/dev/{choose_disk(read_disks(sys_block, by_id, mounts))}"


async def wait_for_disk(sys_block: Path, by_id: Path, timeout_s: float) -> str:
    """The scratch disk's device path, waiting for it to appear (udev, slow emulated buses)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return _find_disk(sys_block, by_id)
        except ScratchError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.2)


async def set_up(mount_point: Path, binds: Mapping[str, Path], timeout_s: float) -> dict[str, float]:
    """Seconds per step: waiting for the disk, then the secure mount's (luksFormat, luksOpen, mkfs,
    mount), then the bind mounts."""
    began = time.monotonic()
    device = await wait_for_disk(Path("/sys/block"), Path("/dev/disk/by-id"), timeout_s)
    steps = {"disk": time.monotonic() - began}
    mount = parse_secure_mount("block-device", scratch_request(device), [], str(mount_point))
    mounter = BlockDeviceMounter(None)
    await mounter.mount(mount)
    steps.update(mounter.timings)
    began = time.monotonic()
    for source, target in _bind_points(mount_point, binds):
        await luks.run(["mount", "--bind", str(source), str(target)])
    steps["bind"] = time.monotonic() - began
    return steps


def process_age() -> float:
    """Seconds since this process started (interpreter start and imports, before main)."""
    ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    return float(Path("/proc/uptime").read_text().split()[0]) - ticks / os.sysconf("SC_CLK_TCK")


def _bind_points(mount_point: Path, binds: Mapping[str, Path]) -> list[tuple[Path, Path]]:
    points = []
    for sub, target in binds.items():
        source = mount_point / sub
        source.mkdir(mode=0o700, exist_ok=True)
        target.mkdir(parents=True, exist_ok=True)
        points.append((source, target))
    return points


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="peerpods-scratch-space", description=__doc__)
    parser.add_argument("--marker", type=Path, default=Path(SCRATCH_SPACE_MARKER))
    parser.add_argument("--mount-point", type=Path, default=IMAGE_DIR)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the disk")
    args = version.parse_args(parser, argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.marker.exists():
        print(f"peerpods-scratch-space: no {args.marker}: no scratch space asked for")
        return 0
    try:
        steps = {"python": process_age(), **asyncio.run(set_up(args.mount_point, BIND_DIRS, args.timeout))}
    except (CdhError, ScratchError, luks.CommandFailed, OSError) as exc:
        print(f"peerpods-scratch-space: error: {exc}", file=sys.stderr)
        return 1
    detail = ", ".join(f"{name} {seconds:.2f}" for name, seconds in steps.items())
    print(f"peerpods-scratch-space: ready in {sum(steps.values()):.3f} s ({detail})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
