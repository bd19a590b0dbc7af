"""The direct-boot initrd: the archive the kernel unpacks, read back by GNU cpio, and the module
load order taken from modules.dep."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from podvm.image.errors import ImageBuildError
from podvm.image.initrd import MODULE_LIST, Entry, direct_initrd, module_load_order, newc_archive

MODULES_DEP = """\
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko \
kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko \
kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/net/unrelated.ko:
"""


def _cpio(archive: bytes, *args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(["cpio", "--quiet", *args], input=archive, capture_output=True, cwd=cwd, check=True)
    return done.stdout.decode()


def test_each_module_comes_after_what_it_needs_and_once() -> None:
    order = module_load_order(MODULES_DEP, ["virtio_pci", "virtio_blk"])
    names = [Path(path).stem for path in order]
    assert sorted(names) == sorted(set(names)), names
    assert "unrelated" not in names
    for module, needs in (
        ("virtio_pci", ["virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio", "virtio_ring"]),
        ("virtio_blk", ["virtio", "virtio_ring"]),
        ("virtio", ["virtio_ring"]),
    ):
        assert all(names.index(need) < names.index(module) for need in needs), (module, names)


def test_a_module_the_kernel_does_not_have_is_an_error() -> None:
    with pytest.raises(ImageBuildError, match=r"virtio_scsi is not in modules\.dep"):
        module_load_order(MODULES_DEP, ["virtio_scsi"])


def test_a_dependency_cycle_is_an_error() -> None:
    with pytest.raises(ImageBuildError, match=r"cycle: a\.ko -> b\.ko -> a\.ko"):
        module_load_order("a.ko: b.ko\nb.ko: a.ko\n", ["a"])


def test_gnu_cpio_reads_back_names_modes_devices_and_contents(tmp_path: Path) -> None:
    archive = newc_archive(
        [
            Entry("dev", stat.S_IFDIR | 0o755),
            Entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
            Entry("init", stat.S_IFREG | 0o755, b"\x7fELF" + bytes(range(256)) * 3),
            Entry("etc/odd-length", stat.S_IFREG | 0o644, b"abc"),
        ],
        mtime=1_700_000_000,
    )
    assert len(archive) % 4 == 0
    listing = _cpio(archive, "-itv").splitlines()
    assert [line.split()[-1] for line in listing] == ["dev", "dev/console", "init", "etc/odd-length"]
    assert listing[1].startswith("crw-------") and "5,   1" in listing[1]
    assert listing[2].startswith("-rwxr-xr-x")
    (tmp_path / "out").mkdir()
    _cpio(archive, "-idm", "--no-absolute-filenames", "--nonmatching", "dev/console", cwd=tmp_path / "out")
    assert (tmp_path / "out/init").read_bytes() == b"\x7fELF" + bytes(range(256)) * 3
    assert (tmp_path / "out/etc/odd-length").read_bytes() == b"abc"
    assert (tmp_path / "out/init").stat().st_mtime == 1_700_000_000


def test_the_initrd_holds_init_the_modules_in_load_order_and_the_mount_points(tmp_path: Path) -> None:
    modules = tmp_path / "modules"
    for line in MODULES_DEP.splitlines():
        path = line.split(":")[0]
        (modules / path).parent.mkdir(parents=True, exist_ok=True)
        (modules / path).write_bytes(path.encode())
    (modules / "modules.dep").write_text(MODULES_DEP)
    archive = direct_initrd(b"init-binary", modules, "6.1.0-test", mtime=0)
    names = set(_cpio(archive, "-it").split())
    assert {"dev", "proc", "sys", "root", "dev/console", "init", MODULE_LIST} <= names
    assert "lib/modules/6.1.0-test/kernel/net/unrelated.ko" not in names
    out = tmp_path / "out"
    out.mkdir()
    _cpio(archive, "-id", "--nonmatching", "dev/console", cwd=out)
    listed = (out / MODULE_LIST).read_text().split()
    assert listed == [
        f"/lib/modules/6.1.0-test/{path}"
        for path in module_load_order(MODULES_DEP, ["virtio_pci", "virtio_blk"])
    ]
    for path in listed:
        assert (out / path.lstrip("/")).read_bytes() == path.split("6.1.0-test/")[1].encode()
