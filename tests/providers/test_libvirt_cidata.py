"""The NoCloud cidata image, read back with pycdlib the way a guest would see it."""

from __future__ import annotations

import io

import pycdlib

from providers.libvirt.cidata import build_cidata_iso, nocloud_meta_data

USER_DATA = b"#cloud-config\nwrite_files:\n- path: /run/peerpod/daemon.json\n  content: '{}'\n"


def open_iso(image: bytes) -> pycdlib.PyCdlib:
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(image))
    return iso


def read(iso: pycdlib.PyCdlib, **path: str) -> bytes:
    out = io.BytesIO()
    iso.get_file_from_iso_fp(out, **path)
    return out.getvalue()


def test_label_is_cidata_in_both_volume_descriptors() -> None:
    iso = open_iso(build_cidata_iso(USER_DATA, nocloud_meta_data("podvm-a")))
    assert iso.pvd.volume_identifier.rstrip(b" ") == b"cidata"
    assert iso.has_joliet() and iso.has_rock_ridge()
    assert iso.joliet_vd is not None
    assert iso.joliet_vd.volume_identifier.decode("utf-16-be").rstrip() == "cidata"


def test_files_are_there_under_their_nocloud_names() -> None:
    iso = open_iso(build_cidata_iso(USER_DATA, nocloud_meta_data("podvm-a")))
    names = sorted(child.rock_ridge.name() for child in iso.list_children(rr_path="/") if child.rock_ridge)
    assert names == [b".", b"..", b"meta-data", b"user-data", b"vendor-data"]
    for name, expected in (
        ("user-data", USER_DATA),
        ("meta-data", b"local-hostname: podvm-a"),
        ("vendor-data", b""),
    ):
        assert read(iso, rr_path=f"/{name}") == expected
        assert read(iso, joliet_path=f"/{name}") == expected


def test_binary_and_large_user_data_survive() -> None:
    user_data = bytes(range(256)) * 4096  # 1 MiB, every byte value
    iso = open_iso(build_cidata_iso(user_data, b"local-hostname: x", b"vendor"))
    assert read(iso, rr_path="/user-data") == user_data
    assert read(iso, iso_path="/VENDOR_DATA.;1") == b"vendor"


def test_meta_data_names_the_host() -> None:
    assert nocloud_meta_data("podvm-nginx-4d1c9a0e") == b"local-hostname: podvm-nginx-4d1c9a0e"
