"""The disk: a GPT with an EFI system partition and an ext4 root, made from files, not devices.

mkfs.ext4 -d fills the root file system from a directory, mkfs.fat + mtools make the ESP in a file,
sfdisk writes the partition table into the disk file, and the partitions are copied in at their
offsets: no loop device, no mount. Identifiers and timestamps are fixed so unchanged inputs give
the same bytes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from podvm.image.errors import ImageBuildError
from podvm.image.runner import Runner

MIB = 1024 * 1024
SECTOR = 512
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
# "Linux root (x86-64)" of the Discoverable Partitions Specification.
ROOT_TYPE = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
_NAMESPACE = uuid.UUID("0b5d4c1e-4c8e-4b8c-9e3a-7065657270ad")
DISK_GUID = str(uuid.uuid5(_NAMESPACE, "disk")).upper()
ESP_PARTUUID = str(uuid.uuid5(_NAMESPACE, "esp")).upper()
ROOT_PARTUUID = str(uuid.uuid5(_NAMESPACE, "root")).lower()
ROOT_FS_UUID = str(uuid.uuid5(_NAMESPACE, "root-fs"))
ROOT_HASH_SEED = str(uuid.uuid5(_NAMESPACE, "root-fs-hash-seed"))
ESP_VOLUME_ID = "50504f44"  # "PPOD"
# Free space left in the root file system for what the pod VM writes (logs, container files).
ROOT_HEADROOM = 512 * MIB
ESP_SIZE = 128 * MIB


def align_mib(size: int) -> int:
    return -(-size // MIB) * MIB


@dataclass(frozen=True)
class Layout:
    """Byte offsets and sizes; 1 MiB aligned, with 1 MiB left at the end for the backup GPT."""

    esp_start: int
    esp_size: int
    root_start: int
    root_size: int

    @property
    def total(self) -> int:
        return self.root_start + self.root_size + MIB


def plan_layout(esp_size: int, root_size: int) -> Layout:
    esp_size, root_size = align_mib(esp_size), align_mib(root_size)
    return Layout(esp_start=MIB, esp_size=esp_size, root_start=MIB + esp_size, root_size=root_size)


def sfdisk_script(layout: Layout) -> str:
    """The sfdisk input for `layout`, with fixed disk and partition GUIDs."""

    def sectors(n: int) -> int:
        return n // SECTOR

    return (
        "label: gpt\n"
        f"label-id: {DISK_GUID}\n"
        "unit: sectors\n"
        "first-lba: 2048\n"
        f"start={sectors(layout.esp_start)}, size={sectors(layout.esp_size)}, type={ESP_TYPE}, "
        f'uuid={ESP_PARTUUID}, name="esp"\n'
        f"start={sectors(layout.root_start)}, size={sectors(layout.root_size)}, type={ROOT_TYPE}, "
        f'uuid={ROOT_PARTUUID.upper()}, name="root"\n'
    )


def tree_size(root: Path) -> int:
    """Bytes the tree needs in ext4 with 4 KiB blocks: each file rounded up, plus one inode each."""
    total = 0
    for directory, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            stat = Path(directory, name).lstat()
            total += -(-stat.st_size // 4096) * 4096 + 256
    return total


def root_fs_size(content_bytes: int) -> int:
    """Room for the content, ext4's metadata and journal (about 10%), and ROOT_HEADROOM."""
    return align_mib(int(content_bytes * 1.1) + 64 * MIB + ROOT_HEADROOM)


def make_root_fs(runner: Runner, rootfs: Path, image: Path, size: int, epoch: int) -> None:
    """ext4 filled from `rootfs`, every inode's atime and ctime set to `epoch` afterwards: mke2fs
    copies the source files' ctimes, which no tool can set, and their atimes, which reading them
    moves; E2FSPROGS_FAKE_TIME covers only the superblock."""
    image.unlink(missing_ok=True)
    runner.run(
        [
            "mkfs.ext4", "-q", "-F", "-b", "4096", "-L", "root", "-U", ROOT_FS_UUID,
            "-E", f"hash_seed={ROOT_HASH_SEED},root_owner=0:0",
            "-d", rootfs, image, f"{size // 1024}k",
        ]
    )  # fmt: skip
    script = image.with_suffix(".debugfs")
    script.write_text(ctime_script(rootfs, epoch))
    runner.run(["debugfs", "-w", "-f", script, image])
    script.unlink()


def ctime_script(rootfs: Path, epoch: int) -> str:
    """debugfs commands setting atime and ctime of every path of `rootfs` (and "/") to `epoch`."""
    paths = ["/"]
    for directory, dirs, files in os.walk(rootfs):
        for name in (*dirs, *files):
            paths.append("/" + Path(directory, name).relative_to(rootfs).as_posix())
    for path in paths:
        if '"' in path or "\n" in path:
            raise ImageBuildError(f"cannot quote {path!r} for debugfs")
    return "".join(
        f'sif "{path}" {field} @{epoch}\n' for path in sorted(paths) for field in ("atime", "ctime")
    )


def make_esp(runner: Runner, image: Path, size: int, files: Mapping[str, Path], epoch: int) -> None:
    """A FAT32 ESP holding `files` (ESP path like "EFI/BOOT/BOOTX64.EFI" -> source). The files are
    staged as a tree with every timestamp at `epoch` and copied with `mcopy -s -m`, which keeps
    them (directories made by `mmd` would get the clock's time)."""
    image.unlink(missing_ok=True)
    runner.run(
        [
            "mkfs.fat", "-F", "32", "--invariant", "-i", ESP_VOLUME_ID, "-n", "ESP",
            "-C", image, str(size // 1024),
        ]
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="peerpods-esp-") as scratch:
        tree = Path(scratch)
        for esp_path, source in files.items():
            target = tree / esp_path
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        for path in sorted(tree.rglob("*"), reverse=True):
            os.utime(path, (epoch, epoch), follow_symlinks=False)
        runner.run(["mcopy", "-s", "-m", "-i", image, *sorted(tree.iterdir()), "::"])


def _copy_into(disk: Path, offset: int, part: Path) -> None:
    """Copy `part` into `disk` at `offset`, leaving runs of zeros as holes."""
    chunk = MIB
    zero = bytes(chunk)
    with part.open("rb") as src, disk.open("r+b") as dst:
        position = offset
        while block := src.read(chunk):
            if block != zero[: len(block)]:
                dst.seek(position)
                dst.write(block)
            position += len(block)


def assemble(runner: Runner, disk: Path, layout: Layout, esp: Path, root: Path) -> None:
    """The raw disk: a sparse file of the layout's size, the GPT, then both partitions."""
    disk.unlink(missing_ok=True)
    with disk.open("wb") as f:
        f.truncate(layout.total)
    script = sfdisk_script(layout)
    runner.run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", disk], input_text=script)
    _copy_into(disk, layout.esp_start, esp)
    _copy_into(disk, layout.root_start, root)


def to_qcow2(runner: Runner, raw: Path, qcow2: Path) -> None:
    qcow2.unlink(missing_ok=True)
    runner.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-o", "compat=1.1", raw, qcow2])
