"""Which user data source this VM has, decided without network traffic.

Upstream's order: a config drive file first (cheapest, and present on libvirt/BYOM), then Azure,
AWS, GCP. Upstream reads CPUID and the DMI table; sysfs DMI attributes carry the same vendor
strings and work unprivileged, so they are used here (directory configurable for tests).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from podvm.userdata.sources import USER_DATA_FILENAME, SourceSettings

log = logging.getLogger(__name__)

DMI_DIR = "/sys/class/dmi/id"
# Azure stamps every VM with this chassis asset tag; Hyper-V reports Microsoft as vendor.
AZURE_CHASSIS_ASSET_TAG = "7783-7084-3265-9085-8269-3286-77"
AZURE_SYS_VENDOR = "Microsoft Corporation"
AWS_SYS_VENDOR = "Amazon EC2"
GCP_PRODUCT_NAME = "Google Compute Engine"
GCP_SYS_VENDOR = "Google"


@dataclass(frozen=True, slots=True)
class DmiInfo:
    """The DMI strings that identify a cloud; empty when unreadable."""

    sys_vendor: str = ""
    product_name: str = ""
    chassis_asset_tag: str = ""

    @classmethod
    def read(cls, dmi_dir: Path) -> DmiInfo:
        return cls(
            sys_vendor=_read_attr(dmi_dir / "sys_vendor"),
            product_name=_read_attr(dmi_dir / "product_name"),
            chassis_asset_tag=_read_attr(dmi_dir / "chassis_asset_tag"),
        )


def _read_attr(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""


def cloud_from_dmi(dmi: DmiInfo) -> str | None:
    """The metadata-service source name matching the DMI strings, if any."""
    if dmi.chassis_asset_tag == AZURE_CHASSIS_ASSET_TAG or dmi.sys_vendor == AZURE_SYS_VENDOR:
        return "azure"
    if dmi.sys_vendor == AWS_SYS_VENDOR:
        return "aws"
    if dmi.product_name == GCP_PRODUCT_NAME or dmi.sys_vendor == GCP_SYS_VENDOR:
        return "gcp"
    return None


def detect_source_name(settings: SourceSettings, dmi_dir: Path) -> str | None:
    """`nocloud` if the config drive has user data, else the cloud the DMI strings name, else None."""
    if (settings.cidata_dir / USER_DATA_FILENAME).exists():
        return "nocloud"
    dmi = DmiInfo.read(dmi_dir)
    cloud = cloud_from_dmi(dmi)
    if cloud is None:
        log.info(
            "no user data source detected (sys_vendor=%r, product_name=%r)", dmi.sys_vendor, dmi.product_name
        )
    return cloud
