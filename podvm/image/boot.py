"""Booting the image: one unified kernel image (systemd-stub + kernel + initrd + command line).

Firmware loads `\\EFI\\BOOT\\BOOTX64.EFI` from the ESP, the removable-media path that needs no boot
entries in NVRAM, so the same disk boots on libvirt/OVMF and on the clouds with no boot loader, no
menu and no timeout. The command line is inside the signed-able image, not editable at boot.
"""

from __future__ import annotations

import array
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from podvm.image.errors import ImageBuildError
from podvm.image.runner import Runner

# Quiet kernel on the serial console (the console is the pod VM's only log), no fsck and no
# splash; root by partition UUID so the disk may be attached under any device name.
CMDLINE_OPTIONS = (
    "rw",
    "console=tty0",
    "console=ttyS0,115200",
    "quiet",
    "loglevel=3",
    "fsck.mode=skip",
    "systemd.show_status=false",
    "udev.log_level=3",
    "rd.udev.log_level=3",
    "panic=10",
)
# Direct kernel boot (libvirt, not confidential): the serial console only (no display), and what
# Kata passes its guests to skip work a VM does not need: the IO-APIC timer check, the PS/2
# controller probe, the crypto self-tests; RCU grace periods expedited.
DIRECT_CMDLINE_OPTIONS = (
    *(option for option in CMDLINE_OPTIONS if option != "console=tty0"),
    "no_timer_check",
    "i8042.direct=1",
    "i8042.dumbkbd=1",
    "i8042.nopnp=1",
    "i8042.noaux=1",
    "cryptomgr.notests",
    "rcupdate.rcu_expedited=1",
)
_SECTION_ALIGN = 0x1000


def kernel_cmdline(root_partuuid: str, extra: Sequence[str] = ()) -> str:
    return " ".join((f"root=PARTUUID={root_partuuid}", *CMDLINE_OPTIONS, *extra))


def direct_cmdline(root_partuuid: str) -> str:
    """The command line a VM manager passes with the published kernel (direct kernel boot)."""
    return " ".join((f"root=PARTUUID={root_partuuid}", *DIRECT_CMDLINE_OPTIONS))


def pe_image_end(stub: bytes) -> int:
    """ImageBase + SizeOfImage of a PE32+ file: where sections may be added after it."""
    try:
        pe_offset = _pe_offset(stub)
        optional = pe_offset + 24
        (magic,) = struct.unpack_from("<H", stub, optional)
        if magic != 0x20B:
            raise ImageBuildError(f"the EFI stub is not PE32+ (optional header magic {magic:#x})")
        (image_base,) = struct.unpack_from("<Q", stub, optional + 24)
        (size_of_image,) = struct.unpack_from("<I", stub, optional + 56)
    except struct.error:
        raise ImageBuildError("the EFI stub is truncated") from None
    return int(image_base + size_of_image)


def _pe_offset(image: bytes) -> int:
    (pe_offset,) = struct.unpack_from("<I", image, 0x3C)
    if image[pe_offset : pe_offset + 4] != b"PE\0\0":
        raise ImageBuildError("the EFI image is not a PE file")
    return int(pe_offset)


def pe_checksum(image: bytes, checksum_offset: int) -> int:
    """The PE optional header CheckSum: the 16-bit words summed with end-around carry (the field
    itself counted as zero), plus the file length."""
    data = bytearray(image)
    data[checksum_offset : checksum_offset + 4] = bytes(4)
    if len(data) % 2:
        data.append(0)
    words = array.array("H", bytes(data))
    if sys.byteorder == "big":
        words.byteswap()
    total = sum(words)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return (total + len(image)) & 0xFFFFFFFF


def stamp_pe(image: bytes, epoch: int) -> bytes:
    """`image` with its COFF TimeDateStamp set to `epoch` and the CheckSum recomputed: objcopy
    writes the time of the build there, which would make every build differ."""
    try:
        pe_offset = _pe_offset(image)
        data = bytearray(image)
        struct.pack_into("<I", data, pe_offset + 8, epoch & 0xFFFFFFFF)
        checksum_offset = pe_offset + 24 + 64
        struct.pack_into("<I", data, checksum_offset, pe_checksum(bytes(data), checksum_offset))
    except struct.error:
        raise ImageBuildError("the EFI image is truncated") from None
    return bytes(data)


@dataclass(frozen=True)
class Section:
    name: str
    path: Path
    size: int


def section_addresses(image_end: int, sections: Sequence[Section]) -> list[tuple[Section, int]]:
    """Each added section's virtual address: after the stub and each other, page aligned."""
    placed = []
    address = image_end
    for section in sections:
        address = -(-address // _SECTION_ALIGN) * _SECTION_ALIGN
        placed.append((section, address))
        address += section.size
    return placed


def build_uki(
    runner: Runner,
    stub: Path,
    kernel: Path,
    initrd: Path,
    cmdline: str,
    os_release: Path,
    out: Path,
    epoch: int,
) -> None:
    """Write the unified kernel image `out` (sections .osrel, .cmdline, .linux, .initrd), stamped
    with `epoch`."""
    cmdline_file = out.with_suffix(".cmdline")
    cmdline_file.write_text(cmdline + "\n")
    parts = {".osrel": os_release, ".cmdline": cmdline_file, ".linux": kernel, ".initrd": initrd}
    sections = [Section(name, path, path.stat().st_size) for name, path in parts.items()]
    argv: list[str | Path] = ["objcopy"]
    for section, address in section_addresses(pe_image_end(stub.read_bytes()), sections):
        argv += [
            "--add-section", f"{section.name}={section.path}",
            "--change-section-vma", f"{section.name}={address:#x}",
        ]  # fmt: skip
    runner.run([*argv, stub, out])
    out.write_bytes(stamp_pe(out.read_bytes(), epoch))
    cmdline_file.unlink()
