"""The pod VM's scratch space at boot: which disk it takes (the one the provider named, else the only
blank one; never the root disk, a CD-ROM or one of several unnamed disks), and nothing without the
marker. The encryption itself is the CDH's secure mount (tests/podvm/test_securemount_luks.py) and
the end-to-end test checks it inside a real pod VM."""

from __future__ import annotations

from pathlib import Path

import pytest

from podvm.cdh.mount_request import KeyKind, SourceType, parse_secure_mount
from podvm.cdh.scratch import Disk, ScratchError, choose_disk, main, read_disks, scratch_request
from protocols.cloudconfig import SCRATCH_SPACE_MARKER_PATH
from protocols.scratch_disk import SCRATCH_SPACE_MARKER

ROOT = Disk("vda", partitioned=True, in_use=True, size_sectors=20_000_000)
CIDATA = Disk("sr0", removable=True, read_only=True, size_sectors=700)


def test_the_named_disk_wins() -> None:
    disks = [
        ROOT,
        Disk("vdb", size_sectors=1000),
        Disk("vdc", ids=("virtio-peerpods-scratch",), size_sectors=9),
    ]
    assert choose_disk(disks) == "vdc"
    assert choose_disk([ROOT, Disk("sdb", ids=("google-peerpods-scratch",), size_sectors=9)]) == "sdb"


def test_the_only_blank_disk_is_taken() -> None:  # an EBS NVMe namespace, an Azure data disk
    assert (
        choose_disk([ROOT, CIDATA, Disk("loop0", size_sectors=8), Disk("nvme1n1", size_sectors=9)])
        == "nvme1n1"
    )


@pytest.mark.parametrize(
    "disks",
    [
        [ROOT, CIDATA],
        [ROOT, Disk("vdb", size_sectors=0)],
        [ROOT, Disk("sdb", partitioned=True, size_sectors=9)],  # Azure's resource disk
        [ROOT, Disk("vdb", size_sectors=9), Disk("vdc", size_sectors=9)],
    ],
)
def test_no_disk_or_no_single_choice_is_an_error(disks: list[Disk]) -> None:
    with pytest.raises(ScratchError):
        choose_disk(disks)


def test_read_disks_from_sysfs(tmp_path: Path) -> None:
    block, by_id, dev = tmp_path / "block", tmp_path / "by-id", tmp_path / "dev"
    for name, size, removable in (("vda", "2000", "0"), ("vdc", "900", "0"), ("sr0", "10", "1")):
        (block / name).mkdir(parents=True)
        (block / name / "size").write_text(size + "\n")
        (block / name / "removable").write_text(removable)
        (block / name / "ro").write_text("0")
        (dev / name).parent.mkdir(exist_ok=True)
        (dev / name).touch()
    (block / "vda" / "vda1").mkdir()
    (block / "vda" / "vda1" / "partition").write_text("1")
    by_id.mkdir()
    (by_id / "virtio-peerpods-scratch").symlink_to(dev / "vdc")
    disks = read_disks(block, by_id, "/dev/vda1 / ext4 rw 0 0\nproc /proc proc rw 0 0\n")
    assert {d.name: d for d in disks}["vda"] == Disk("vda", partitioned=True, in_use=True, size_sectors=2000)
    assert choose_disk(disks) == "vdc"


def test_request_is_an_ephemeral_luks2_secure_mount() -> None:
    mount = parse_secure_mount("block-device", scratch_request("/dev/vdc"), [], "/run/kata-containers/image")
    assert (mount.key.kind, mount.source, mount.mapper_name) == (
        KeyKind.EPHEMERAL,
        SourceType.EMPTY,
        "scratch",
    )


def test_without_the_marker_nothing_happens(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--marker", str(tmp_path / "absent"), "--mount-point", str(tmp_path / "image")]) == 0
    assert "no scratch space asked for" in capsys.readouterr().out
    assert not (tmp_path / "image").exists()


def test_marker_is_where_process_user_data_writes_it() -> None:
    assert SCRATCH_SPACE_MARKER == SCRATCH_SPACE_MARKER_PATH
