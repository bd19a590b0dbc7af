"""The NoCloud seed image that carries the pod VM's user data, as a pure function returning bytes.

cloud-init's NoCloud datasource (and our process-user-data) find the image by its volume label
`cidata` and read `user-data`, `meta-data` and `vendor-data` from its root. The image has Rock Ridge
and Joliet names, like `genisoimage -joliet -rock`, so that the lower-case names survive whatever
the guest mounts it with.
"""

from __future__ import annotations

import io

import pycdlib

CIDATA_LABEL = "cidata"

# (ISO 9660 name, Rock Ridge / Joliet name). Plain ISO 9660 allows only A-Z, 0-9 and "_".
_FILES = (
    ("/USER_DATA.;1", "user-data"),
    ("/META_DATA.;1", "meta-data"),
    ("/VENDOR_DATA.;1", "vendor-data"),
)


def nocloud_meta_data(hostname: str) -> bytes:
    """NoCloud meta-data naming the VM, as upstream writes it."""
    return f"local-hostname: {hostname}".encode()


def build_cidata_iso(user_data: bytes, meta_data: bytes, vendor_data: bytes = b"") -> bytes:
    """An ISO 9660 image labelled `cidata` holding the three NoCloud files."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident=CIDATA_LABEL, joliet=3, rock_ridge="1.09")
    try:
        for (iso_path, name), content in zip(_FILES, (user_data, meta_data, vendor_data), strict=True):
            iso.add_fp(io.BytesIO(content), len(content), iso_path, rr_name=name, joliet_path=f"/{name}")
        out = io.BytesIO()
        iso.write_fp(out)
    finally:
        iso.close()
    return out.getvalue()
