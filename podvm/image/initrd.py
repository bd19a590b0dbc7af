"""The direct-boot initrd: peerpods-init (a static Go program, `init/main.go`) and the root disk's
drivers, in an uncompressed newc archive.

initramfs-tools' initrd starts udev and probes every device before it mounts the root: about five
seconds of an emulated pod VM's boot. This one loads the listed modules (their dependencies first,
from the kernel's modules.dep), finds the partition the command line names and hands over to
systemd. Uncompressed, as the kernel unpacks it without a decompressor and the firmware copies two
megabytes instead of six. Without a Go toolchain the image keeps initramfs-tools' initrd.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from podvm.image import inputs
from podvm.image.errors import ImageBuildError
from podvm.image.runner import Runner

SOURCE = Path(__file__).resolve().parent / "init"
MODULE_LIST = "etc/peerpods-init/modules"
# The root disk of a libvirt pod VM is virtio; ext4 is built into the cloud kernel.
MODULES = ("virtio_pci", "virtio_blk")
_CONSOLE = (5, 1)  # the kernel opens /dev/console for init before devtmpfs is mounted
_NEWC_MAGIC = b"070701"
_TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class Entry:
    """One member of the archive: a directory, a regular file or a character device."""

    name: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def newc_archive(entries: Iterable[Entry], mtime: int) -> bytes:
    """`entries` as a newc ("070701") cpio archive, the format the kernel unpacks as initramfs."""
    out = bytearray()
    for inode, entry in enumerate((*entries, Entry(_TRAILER, 0)), start=1):
        name = entry.name.encode() + b"\0"
        fields = (
            inode if entry.name != _TRAILER else 0,
            entry.mode,
            0,  # uid
            0,  # gid
            2 if stat.S_ISDIR(entry.mode) else 1,  # nlink
            mtime if entry.name != _TRAILER else 0,
            len(entry.data),
            0,  # dev major
            0,  # dev minor
            entry.rdev[0],
            entry.rdev[1],
            len(name),
            0,  # check
        )
        out += _NEWC_MAGIC + b"".join(b"%08x" % field for field in fields) + name
        out += b"\0" * (-len(out) % 4)
        out += entry.data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def module_load_order(modules_dep: str, wanted: Sequence[str]) -> list[str]:
    """Paths (relative to the kernel's module directory) of `wanted` and what they depend on, each
    after its dependencies, from the text of modules.dep."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in modules_dep.splitlines():
        path, sep, rest = line.partition(":")
        if not sep:
            continue
        deps[path] = rest.split()
        by_name[_module_name(path)] = path
    order: list[str] = []

    def visit(path: str, chain: tuple[str, ...]) -> None:
        if path in order:
            return
        if path in chain:
            raise ImageBuildError(f"modules.dep has a dependency cycle: {' -> '.join((*chain, path))}")
        for dependency in deps.get(path, []):
            visit(dependency, (*chain, path))
        order.append(path)

    for name in wanted:
        if name not in by_name:
            raise ImageBuildError(f"module {name} is not in modules.dep (built in, or not this kernel's?)")
        visit(by_name[name], ())
    return order


def _module_name(path: str) -> str:
    return Path(path).name.split(".ko", 1)[0].replace("-", "_")


def direct_initrd(init: bytes, module_dir: Path, kernel_version: str, mtime: int) -> bytes:
    """The archive: /init, the modules `MODULES` need from `module_dir` (the kernel's
    /lib/modules/<version>), their load order, and the mount points init uses."""
    order = module_load_order((module_dir / "modules.dep").read_text(), MODULES)
    base = f"lib/modules/{kernel_version}"
    files: dict[str, bytes] = {f"{base}/{path}": (module_dir / path).read_bytes() for path in order}
    files[MODULE_LIST] = "".join(f"/{base}/{path}\n" for path in order).encode()
    directories = sorted({str(up) for name in files for up in Path(name).parents if str(up) != "."})
    entries = [Entry(name, stat.S_IFDIR | 0o755) for name in ("dev", "proc", "sys", "root", *directories)]
    entries.append(Entry("dev/console", stat.S_IFCHR | 0o600, rdev=_CONSOLE))
    entries.append(Entry("init", stat.S_IFREG | 0o755, init))
    entries += [Entry(name, stat.S_IFREG | 0o644, data) for name, data in sorted(files.items())]
    return newc_archive(entries, mtime)


def go_toolchain() -> str | None:
    """`go` on PATH, else the official tarball's place."""
    found = shutil.which("go")
    if found:
        return found
    return "/usr/local/go/bin/go" if os.access("/usr/local/go/bin/go", os.X_OK) else None


def build_init(runner: Runner, go: str, cache_dir: Path) -> Path:
    """peerpods-init, static and reproducible (no build id, no paths), built once per source and
    Go version into `cache_dir`."""
    version = runner.run([go, "version"], capture=True).strip()
    source = inputs.listing_digest(SOURCE, inputs.tree_files(SOURCE, "."))
    key = inputs.combine({"source": source, "go": version})
    out = cache_dir / "init" / key / "peerpods-init"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    env = {"CGO_ENABLED": "0", "GO111MODULE": "off", "GOTOOLCHAIN": "local", "GOFLAGS": "-buildvcs=false"}
    partial = out.with_suffix(".tmp")
    flags = ["-trimpath", "-ldflags=-s -w -buildid="]
    runner.run([go, "build", *flags, "-o", partial, SOURCE / "main.go"], env=env)
    partial.replace(out)
    return out
