"""The pod VM image build's pure parts, and the disk assembly on real tools (no root, no loop device)."""

from __future__ import annotations

import json
import os
import py_compile
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from podvm.image import boot, disk, inputs, pyenv, rootfs
from podvm.image.build import FILES
from podvm.image.config import (
    DIRECT_FLAVOUR,
    FALLBACK_MIRROR,
    FIRMWARE_FLAVOUR,
    host_mirror,
    mirror_from_sources,
)
from podvm.image.errors import ImageBuildError
from podvm.image.runner import Runner, build_env

EPOCH = 1735689600
DEB822 = """Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
"""


def test_mirror_from_deb822_sources():
    assert mirror_from_sources([DEB822]) == "http://deb.debian.org/debian"


def test_mirror_from_one_line_sources_skips_other_suites():
    text = (
        "deb http://security.example/debian-security bookworm-security main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian/ bookworm main\n"
    )
    assert mirror_from_sources(["deb https://packages.example/apt cloud-sdk main\n", text]) == (
        "http://mirror.example/debian"
    )


def test_no_mirror_for_the_suite():
    assert mirror_from_sources(["deb http://m.example/debian trixie main\n"]) is None


def test_host_mirror_falls_back(tmp_path):
    assert host_mirror(tmp_path) == FALLBACK_MIRROR
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEB822)
    (tmp_path / "sources.list.d" / "ignored.txt").write_text("deb http://x.example/debian bookworm main\n")
    assert host_mirror(tmp_path) == "http://deb.debian.org/debian"


PYPROJECT = """
[project]
name = "peerpods"
dependencies = ["protobuf>=6", "aiohttp>=3.10"]
[project.optional-dependencies]
aws = ["boto3>=1.35"]
attestation = ["jwcrypto>=1.5", "aiohttp>=3.10"]
test = ["peerpods[aws, attestation]", "pytest>=8"]
"""


def test_runtime_requirements_expand_extras_and_self_references():
    assert pyenv.runtime_requirements(PYPROJECT) == ["protobuf>=6", "aiohttp>=3.10"]
    assert pyenv.runtime_requirements(PYPROJECT, ["test"]) == [
        "protobuf>=6",
        "aiohttp>=3.10",
        "pytest>=8",
        "boto3>=1.35",
        "jwcrypto>=1.5",
    ]


def test_unknown_extra_is_an_error():
    with pytest.raises(ImageBuildError, match="no optional dependency group 'gpu'"):
        pyenv.runtime_requirements(PYPROJECT, ["gpu"])


def test_wheel_versions_from_file_names(tmp_path):
    for name in ("typing_extensions-4.16.0-py3-none-any.whl", "PyYAML-6.0.4-cp311-cp311-manylinux.whl"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "requirements.txt").write_text("")
    assert pyenv.wheel_versions(tmp_path) == {"typing-extensions": "4.16.0", "pyyaml": "6.0.4"}


def test_layout_is_mib_aligned_with_room_for_the_backup_gpt():
    layout = disk.plan_layout(disk.ESP_SIZE, 700 * disk.MIB + 5)
    assert layout.esp_start == disk.MIB
    assert layout.root_start == disk.MIB + disk.ESP_SIZE
    assert layout.root_size == 701 * disk.MIB
    assert layout.total == layout.root_start + layout.root_size + disk.MIB


def test_root_fs_size_leaves_headroom():
    assert disk.root_fs_size(1000 * disk.MIB) >= 1000 * disk.MIB + disk.ROOT_HEADROOM
    assert disk.root_fs_size(1) % disk.MIB == 0


def _pe(image_base: int, size_of_image: int, magic: int = 0x20B) -> bytes:
    data = bytearray(0x200)
    struct.pack_into("<I", data, 0x3C, 0x80)
    data[0x80:0x84] = b"PE\0\0"
    struct.pack_into("<H", data, 0x80 + 24, magic)
    struct.pack_into("<Q", data, 0x80 + 24 + 24, image_base)
    struct.pack_into("<I", data, 0x80 + 24 + 56, size_of_image)
    return bytes(data)


def test_pe_image_end_and_section_addresses(tmp_path):
    assert boot.pe_image_end(_pe(0x1000_0000, 0x19300)) == 0x1001_9300
    sections = [boot.Section(".osrel", tmp_path, 10), boot.Section(".linux", tmp_path, 0x1001)]
    placed = boot.section_addresses(0x19300, sections)
    assert [address for _, address in placed] == [0x1A000, 0x1B000]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_pe(0, 0x1000, magic=0x10B), "not PE32\\+"),
        (_pe(0, 0x1000)[:0x90], "truncated"),
        (b"MZ" + bytes(0x100), "not a PE file"),
    ],
)
def test_bad_stub_is_rejected(data, message):
    with pytest.raises(ImageBuildError, match=message):
        boot.pe_image_end(data)


def test_stamp_pe_sets_the_time_and_a_valid_checksum():
    image = _pe(0, 0x1000) + b"\x01\x02\x03"  # odd length: the last byte is padded
    stamped = boot.stamp_pe(image, EPOCH)
    assert struct.unpack_from("<I", stamped, 0x80 + 8)[0] == EPOCH
    checksum_offset = 0x80 + 24 + 64
    stored = struct.unpack_from("<I", stamped, checksum_offset)[0]
    assert stored == boot.pe_checksum(stamped, checksum_offset) != 0
    assert boot.stamp_pe(stamped, EPOCH) == stamped
    assert stamped[: 0x80 + 8] == image[: 0x80 + 8]


def test_stamp_pe_checksum_matches_objcopy(tmp_path):
    """objcopy fills in the CheckSum of the PE it writes; ours must agree with it."""
    stub = Path("/usr/lib/systemd/boot/efi/linuxx64.efi.stub")
    if not (stub.exists() and shutil.which("objcopy")):
        pytest.skip("needs systemd-boot-efi and binutils")
    extra = tmp_path / "extra"
    extra.write_bytes(bytes(range(256)) * 17)
    out = tmp_path / "out.efi"
    subprocess.run(
        ["objcopy", "--add-section", f".osrel={extra}", "--change-section-vma", ".osrel=0x30000", stub, out],
        check=True,
    )
    data = out.read_bytes()
    checksum_offset = struct.unpack_from("<I", data, 0x3C)[0] + 24 + 64
    assert struct.unpack_from("<I", data, checksum_offset)[0] == boot.pe_checksum(data, checksum_offset)


def test_real_stub_leaves_room_for_sections():
    stub = Path("/usr/lib/systemd/boot/efi/linuxx64.efi.stub")
    if not stub.exists():
        pytest.skip("systemd-boot-efi is not installed")
    assert 0 < boot.pe_image_end(stub.read_bytes()) < 0x1000000


def test_cmdline_names_the_root_partition_and_the_serial_console():
    line = boot.kernel_cmdline(disk.ROOT_PARTUUID)
    assert line.startswith(f"root=PARTUUID={disk.ROOT_PARTUUID} ")
    assert "console=ttyS0,115200" in line.split()


def test_direct_boot_cmdline_is_the_serial_console_only():
    words = boot.direct_cmdline(disk.ROOT_PARTUUID).split()
    assert words[0] == f"root=PARTUUID={disk.ROOT_PARTUUID}"
    assert [w for w in words if w.startswith("console=")] == ["console=ttyS0,115200"]
    assert "cryptomgr.notests" in words and "quiet" in words


def test_kernel_version_per_flavour(tmp_path):
    (tmp_path / "boot").mkdir()
    for name in ("vmlinuz-6.1.0-50-amd64", "vmlinuz-6.1.0-50-cloud-amd64", "config-6.1.0-50-amd64"):
        (tmp_path / "boot" / name).write_bytes(b"")
    assert rootfs.kernel_version(tmp_path, FIRMWARE_FLAVOUR) == "6.1.0-50-amd64"
    assert rootfs.kernel_version(tmp_path, DIRECT_FLAVOUR) == "6.1.0-50-cloud-amd64"
    (tmp_path / "boot" / "vmlinuz-6.1.0-50-cloud-amd64").unlink()
    with pytest.raises(ImageBuildError, match="expected one cloud-amd64 kernel"):
        rootfs.kernel_version(tmp_path, DIRECT_FLAVOUR)


def test_initramfs_configs_are_in_the_files_tree():
    for rel in rootfs.initramfs_config_files():
        assert (FILES / rel).is_file(), rel


def test_unusable_bytecode_finds_missing_and_source_checked_pycs(tmp_path):
    lib = tmp_path / "usr/lib/py"
    lib.mkdir(parents=True)
    modes = {
        "fresh": py_compile.PycInvalidationMode.UNCHECKED_HASH,
        "checked": py_compile.PycInvalidationMode.CHECKED_HASH,
        "timestamp": py_compile.PycInvalidationMode.TIMESTAMP,
    }
    for name, mode in {**modes, "missing": None}.items():
        (lib / f"{name}.py").write_text("x = 1\n")
        if mode is not None:
            py_compile.compile(str(lib / f"{name}.py"), invalidation_mode=mode, doraise=True)
    tag = sys.implementation.cache_tag
    assert pyenv.unusable_bytecode(tmp_path, ["/usr/lib/py"], tag) == [
        "/usr/lib/py/checked.py",
        "/usr/lib/py/missing.py",
        "/usr/lib/py/timestamp.py",
    ]


def test_listing_digest_follows_content_and_exec_bit_not_mtime(tmp_path):
    (tmp_path / "pkg").mkdir()
    script = tmp_path / "pkg" / "a.py"
    script.write_text("x = 1\n")
    (tmp_path / "pkg" / "__pycache__").mkdir()
    (tmp_path / "pkg" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"junk")
    files = inputs.tree_files(tmp_path, "pkg")
    assert files == ["pkg/a.py"]
    first = inputs.listing_digest(tmp_path, files)
    os.utime(script, (1, 1))
    assert inputs.listing_digest(tmp_path, files) == first
    script.chmod(0o755)
    assert inputs.listing_digest(tmp_path, files) != first
    script.chmod(0o644)
    script.write_text("x = 2\n")
    assert inputs.listing_digest(tmp_path, files) != first


def test_project_files_are_the_wheel_sources():
    root = Path(__file__).resolve().parents[2]
    files = inputs.project_files(root)
    assert "pyproject.toml" in files
    assert "podvm/image/build.py" in files
    assert not any("__pycache__" in f or f.startswith("tests/") for f in files)


_TOOLS = ("sfdisk", "mkfs.ext4", "debugfs", "mkfs.fat", "mcopy", "mdir")


needs_disk_tools = pytest.mark.skipif(
    not all(shutil.which(t) for t in _TOOLS), reason="needs fdisk, e2fsprogs, dosfstools, mtools"
)


def _make_disk(runner, tree, efi, layout, image):
    parts = image.parent
    disk.make_root_fs(runner, tree, parts / "root.ext4", layout.root_size, EPOCH)
    disk.make_esp(runner, parts / "esp.vfat", layout.esp_size, {"EFI/BOOT/BOOTX64.EFI": efi}, EPOCH)
    disk.assemble(runner, image, layout, parts / "esp.vfat", parts / "root.ext4")
    return image


@needs_disk_tools
def test_same_tree_gives_the_same_disk_bytes(tmp_path):
    """Status changes of the source (ctimes) and the clock do not reach the disk."""
    runner = Runner(tmp_path / "build.log", build_env(EPOCH), quiet=True)
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "hostname").write_text("peerpod\n")
    efi = tmp_path / "BOOTX64.EFI"
    efi.write_bytes(b"MZ")
    for path in (tree, tree / "etc", tree / "etc" / "hostname", efi):
        os.utime(path, (EPOCH, EPOCH))
    layout = disk.plan_layout(33 * disk.MIB, 8 * disk.MIB)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = _make_disk(runner, tree, efi, layout, tmp_path / "a" / "disk.raw").read_bytes()
    (tree / "etc" / "hostname").chmod(0o600)  # new ctimes, same content and mode in the end
    (tree / "etc" / "hostname").chmod(0o644)
    efi.chmod(0o600)
    efi.chmod(0o644)
    second = _make_disk(runner, tree, efi, layout, tmp_path / "b" / "disk.raw").read_bytes()
    assert first == second


def test_ctime_script_refuses_unquotable_paths(tmp_path):
    (tmp_path / 'say "hi"').write_text("")
    with pytest.raises(ImageBuildError, match="cannot quote"):
        disk.ctime_script(tmp_path, EPOCH)


@needs_disk_tools
def test_disk_is_assembled_from_files(tmp_path):
    """A real GPT disk with a FAT ESP and an ext4 root, made with no loop device, then read back."""
    runner = Runner(tmp_path / "build.log", build_env(1735689600), quiet=True)
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "hostname").write_text("peerpod\n")
    efi = tmp_path / "BOOTX64.EFI"
    efi.write_bytes(b"MZ not really an EFI binary")
    layout = disk.plan_layout(33 * disk.MIB, 8 * disk.MIB)
    image = _make_disk(runner, tree, efi, layout, tmp_path / "disk.raw")

    assert image.stat().st_size == layout.total
    dump = subprocess.run(["sfdisk", "--json", str(image)], capture_output=True, check=True).stdout
    table = json.loads(dump)["partitiontable"]
    assert table["label"] == "gpt"
    assert table["id"] == disk.DISK_GUID
    esp, root = table["partitions"]
    assert (esp["start"] * 512, esp["size"] * 512, esp["type"]) == (
        layout.esp_start,
        layout.esp_size,
        disk.ESP_TYPE,
    )
    assert (root["start"] * 512, root["uuid"].lower()) == (layout.root_start, disk.ROOT_PARTUUID)
    listing = subprocess.run(
        ["mdir", "-b", "-i", f"{image}@@{layout.esp_start}", "::/EFI/BOOT"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "BOOTX64.EFI" in listing
    with image.open("rb") as f:
        f.seek(layout.root_start + 1024 + 0x38)
        assert f.read(2) == b"\x53\xef"  # the ext4 superblock magic, at the root partition's start


def test_failing_tool_reports_its_log(tmp_path):
    runner = Runner(tmp_path / "build.log", build_env(0), quiet=True)
    with pytest.raises(ImageBuildError, match="exit status 3"):
        runner.run(["sh", "-c", "echo the reason >&2; exit 3"])
    with pytest.raises(ImageBuildError, match="cannot run"):
        runner.run(["/nonexistent/tool"])
    assert "the reason" in runner.tail()
