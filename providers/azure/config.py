"""Azure provider settings: upstream cloud-api-adaptor's flags and environment variables, checked at start.

Names follow upstream's `azure` provider (caa.md §4.3). Two settings are ours: `-arm-endpoint`
(`AZURE_ARM_ENDPOINT`), the Resource Manager URL for sovereign clouds and for tests, and the shared
rate-limit settings of `providers.retry`. Everything that can be checked without calling Azure is
checked here, so that a bad configuration fails at start with every problem listed.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from providers.azure.ids import check_image_id, parse_resource_id
from providers.base import OWNER_TAG, SANDBOX_TAG
from providers.retry import RATE_LIMIT_SETTINGS, RateLimiter, rate_limiter_from_config
from providers.settings import ConfigError, Setting, SettingValue

PUBLIC_ARM_ENDPOINT = "https://management.azure.com"

SETTINGS: list[Setting] = [
    Setting("clientid", "AZURE_CLIENT_ID", help="client id of the service principal or workload identity"),
    Setting(
        "secret",
        "AZURE_CLIENT_SECRET",
        secret=True,
        help="client secret of the service principal; empty: workload identity / managed identity",
    ),
    Setting("tenantid", "AZURE_TENANT_ID", help="Microsoft Entra tenant id"),
    Setting(
        "subscriptionid", "AZURE_SUBSCRIPTION_ID", required=True, help="subscription to create pod VMs in"
    ),
    Setting("region", "AZURE_REGION", required=True, help="region (location) of the pod VMs"),
    Setting("resourcegroup", "AZURE_RESOURCE_GROUP", required=True, help="resource group of the pod VMs"),
    Setting(
        "instance-size",
        "AZURE_INSTANCE_SIZE",
        default="Standard_DC2as_v5",
        help="default VM size of pod VMs",
    ),
    Setting(
        "instance-sizes",
        "AZURE_INSTANCE_SIZES",
        kind=list,
        default=[],
        help="comma-separated VM sizes pods may ask for (allow-list)",
    ),
    Setting("zone", None, help="no effect, as upstream: Azure chooses the availability zone"),
    Setting("subnetid", "AZURE_SUBNET_ID", required=True, help="subnet id of the pod VMs' network interface"),
    Setting("securitygroupid", "AZURE_NSG_ID", help="network security group id for the pod VMs' NIC"),
    Setting(
        "imageid", "AZURE_IMAGE_ID", required=True, help="pod VM image id (gallery, managed or community)"
    ),
    Setting("ssh-key-path", None, help="public SSH key file for the pod VMs (default: a throwaway key)"),
    Setting("ssh-username", "SSH_USERNAME", default="peerpod", help="admin user name of the pod VMs"),
    Setting(
        "disable-cvm", "DISABLECVM", kind=bool, default=False, help="create ordinary, not confidential, VMs"
    ),
    Setting(
        "enable-secure-boot",
        "ENABLE_SECURE_BOOT",
        kind=bool,
        default=False,
        help="enable UEFI secure boot on confidential VMs",
    ),
    Setting("use-public-ip", "USE_PUBLIC_IP", kind=bool, default=False, help="give each pod VM a public IP"),
    Setting(
        "root-volume-size",
        "ROOT_VOLUME_SIZE",
        kind=int,
        default=0,
        help="OS disk size in GiB (0: the image's size)",
    ),
    Setting("tags", "TAGS", kind=list, default=[], help="extra tags, comma-separated key=value pairs"),
    Setting(
        "arm-endpoint",
        "AZURE_ARM_ENDPOINT",
        default=PUBLIC_ARM_ENDPOINT,
        help="Azure Resource Manager endpoint (sovereign clouds; plain http only to loopback for tests)",
    ),
    *RATE_LIMIT_SETTINGS,
]

# Azure refuses these characters in tag names, and reserves these prefixes.
_BAD_TAG_CHARS = re.compile(r"[<>%&\\?/]")
_RESERVED_TAG_PREFIXES = ("microsoft", "azure", "windows")
_SUBNET_TYPE = "Microsoft.Network/virtualNetworks/subnets"
_NSG_TYPE = "Microsoft.Network/networkSecurityGroups"


@dataclass(frozen=True)
class AzureConfig:
    subscription_id: str
    region: str
    resource_group: str
    subnet_id: str
    image_id: str
    client_id: str = ""
    client_secret: str = field(default="", repr=False)
    tenant_id: str = ""
    instance_size: str = "Standard_DC2as_v5"
    instance_sizes: tuple[str, ...] = ()
    nsg_id: str = ""
    ssh_public_key: str = field(default="", repr=False)
    ssh_username: str = "peerpod"
    disable_cvm: bool = False
    enable_secure_boot: bool = False
    use_public_ip: bool = False
    root_volume_size_gib: int = 0
    tags: Mapping[str, str] = field(default_factory=dict)
    arm_endpoint: str = PUBLIC_ARM_ENDPOINT

    @property
    def credential_scope(self) -> str:
        """The token scope of the Resource Manager audience (also right for sovereign clouds)."""
        return self.arm_endpoint.rstrip("/") + "/.default"

    @property
    def endpoint_is_loopback_http(self) -> bool:
        return urlsplit(self.arm_endpoint).scheme == "http"


def _text(values: Mapping[str, SettingValue | None], key: str) -> str:
    value = values.get(key)
    return "" if value is None else str(value).strip()


def _strings(values: Mapping[str, SettingValue | None], key: str) -> list[str]:
    value = values.get(key)
    return [str(v) for v in value] if isinstance(value, list) else []


def parse_tags(entries: list[str], problems: list[str]) -> dict[str, str]:
    """Upstream's `TAGS` syntax (key=value entries) checked against Azure's tag-name rules."""
    tags: dict[str, str] = {}
    for entry in entries:
        key, sep, value = entry.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            problems.append(f"TAGS entry {entry!r} is not key=value")
        elif _BAD_TAG_CHARS.search(key) or len(key) > 512 or len(value) > 256:
            problems.append(
                f"TAGS key {key!r}: Azure tag names exclude < > % & \\ ? / and tags are limited in size"
            )
        elif key.lower().startswith(_RESERVED_TAG_PREFIXES):
            problems.append(f"TAGS key {key!r} uses a prefix Azure reserves (microsoft, azure, windows)")
        elif key in (OWNER_TAG, SANDBOX_TAG):
            problems.append(f"TAGS key {key!r} is set by the adaptor itself")
        else:
            tags[key] = value
    return tags


def _check_endpoint(endpoint: str, problems: list[str]) -> None:
    parts = urlsplit(endpoint)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname:
        try:
            if ipaddress.ip_address(parts.hostname).is_loopback:
                return
        except ValueError:
            pass
    problems.append(
        f"-arm-endpoint or AZURE_ARM_ENDPOINT {endpoint!r} must be an https URL "
        "(plain http is accepted only for a loopback address, for tests)"
    )


def _check_typed_id(label: str, value: str, expected_type: str, problems: list[str]) -> None:
    parsed = parse_resource_id(value)
    if parsed is None or parsed.full_type.lower() != expected_type.lower():
        problems.append(f"{label} {value!r} is not a resource id of type {expected_type}")


def _read_public_key(path: str, problems: list[str]) -> str:
    try:
        key = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        problems.append(f"-ssh-key-path {path!r}: cannot read the public key: {exc.strerror}")
        return ""
    if not key.startswith(("ssh-rsa ", "ssh-ed25519 ")) or "PRIVATE KEY" in key:
        problems.append(f"-ssh-key-path {path!r} is not an OpenSSH public key (ssh-rsa or ssh-ed25519)")
        return ""
    return key


def load_config(values: Mapping[str, SettingValue | None]) -> tuple[AzureConfig, RateLimiter]:
    """The provider's configuration from resolved setting values; ConfigError lists every problem."""
    problems: list[str] = []
    subscription = _text(values, "subscriptionid")
    try:
        uuid.UUID(subscription)
    except ValueError:
        problems.append(
            f"-subscriptionid or AZURE_SUBSCRIPTION_ID {subscription!r} is not a subscription id (GUID)"
        )
    subnet, nsg, image = _text(values, "subnetid"), _text(values, "securitygroupid"), _text(values, "imageid")
    _check_typed_id("-subnetid or AZURE_SUBNET_ID", subnet, _SUBNET_TYPE, problems)
    if nsg:
        _check_typed_id("-securitygroupid or AZURE_NSG_ID", nsg, _NSG_TYPE, problems)
    if (image_problem := check_image_id(image)) is not None:
        problems.append(f"-imageid or AZURE_IMAGE_ID: {image_problem}")

    client_id, secret, tenant = _text(values, "clientid"), _text(values, "secret"), _text(values, "tenantid")
    if secret and not (client_id and tenant):
        problems.append(
            "-secret or AZURE_CLIENT_SECRET needs -clientid/AZURE_CLIENT_ID and -tenantid/AZURE_TENANT_ID"
        )

    size = _text(values, "instance_size")
    sizes = tuple(dict.fromkeys(_strings(values, "instance_sizes")))
    if not size:
        problems.append("-instance-size or AZURE_INSTANCE_SIZE must not be empty")
    elif sizes and size not in sizes:
        problems.append(
            f"the default size {size!r} (AZURE_INSTANCE_SIZE) is not in AZURE_INSTANCE_SIZES {list(sizes)}: "
            "pods that ask for no size could never start"
        )

    disable_cvm, secure_boot = bool(values.get("disable_cvm")), bool(values.get("enable_secure_boot"))
    if disable_cvm and secure_boot:
        problems.append(
            "-enable-secure-boot/ENABLE_SECURE_BOOT applies to confidential VMs only, "
            "but -disable-cvm/DISABLECVM is set"
        )
    root_volume = values.get("root_volume_size") or 0
    if not isinstance(root_volume, int) or root_volume < 0:
        problems.append(
            f"-root-volume-size or ROOT_VOLUME_SIZE must be a size in GiB >= 0, not {root_volume!r}"
        )
        root_volume = 0

    endpoint = _text(values, "arm_endpoint") or PUBLIC_ARM_ENDPOINT
    _check_endpoint(endpoint, problems)
    tags = parse_tags(_strings(values, "tags"), problems)
    key_path = _text(values, "ssh_key_path")
    public_key = _read_public_key(key_path, problems) if key_path else ""
    limiter: RateLimiter | None = None
    try:
        limiter = rate_limiter_from_config(values)
    except ConfigError as exc:
        problems.extend(exc.problems)
    if problems or limiter is None:
        raise ConfigError(problems)

    config = AzureConfig(
        subscription_id=subscription,
        region=_text(values, "region"),
        resource_group=_text(values, "resourcegroup"),
        subnet_id=subnet,
        image_id=image,
        client_id=client_id,
        client_secret=secret,
        tenant_id=tenant,
        instance_size=size,
        instance_sizes=sizes,
        nsg_id=nsg,
        ssh_public_key=public_key,
        ssh_username=_text(values, "ssh_username") or "peerpod",
        disable_cvm=disable_cvm,
        enable_secure_boot=secure_boot,
        use_public_ip=bool(values.get("use_public_ip")),
        root_volume_size_gib=root_volume,
        tags=tags,
        arm_endpoint=endpoint.rstrip("/"),
    )
    return config, limiter
