"""GCP settings with upstream's flags and environment variables, checked together at start-up.

Upstream keys (cloud-api-adaptor `gcp` provider): GCP_CREDENTIALS, GCP_PROJECT_ID, GCP_ZONE,
PODVM_IMAGE_NAME, GCP_MACHINE_TYPE, GCP_INSTANCE_TYPES, GCP_NETWORK, GCP_SUBNETWORK, GCP_DISK_TYPE,
DISABLECVM, GCP_CONFIDENTIAL_TYPE, ROOT_VOLUME_SIZE, USE_PUBLIC_IP, TAGS. GCP_API_ENDPOINT is ours:
it points the SDK at another Compute endpoint (a local fake in tests, or Private Service Connect).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import google.auth
from google.auth import credentials as ga_credentials
from google.auth import exceptions as ga_exceptions
from google.oauth2 import service_account

from providers.gcp.labels import parse_tags
from providers.settings import ConfigError, Setting, SettingValue

CONFIDENTIAL_TYPES = ("TDX", "SEV", "SEV_SNP")
SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)

SETTINGS: list[Setting] = [
    Setting(
        "gcp-credentials",
        "GCP_CREDENTIALS",
        help="service account key (JSON text); empty means Application Default Credentials",
        secret=True,
    ),
    Setting("gcp-project-id", "GCP_PROJECT_ID", required=True, help="project to create pod VMs in"),
    Setting("zone", "GCP_ZONE", required=True, help="zone to create pod VMs in, e.g. us-central1-a"),
    Setting(
        "image-name",
        "PODVM_IMAGE_NAME",
        help="pod VM image: a name in the project, or "
        "projects/<p>/global/images/<name> (the image annotation overrides it)",
    ),
    Setting("machine-type", "GCP_MACHINE_TYPE", default="e2-medium", help="default machine type"),
    Setting(
        "machine-types",
        "GCP_INSTANCE_TYPES",
        kind=list,
        default=[],
        help="comma-separated machine types pods may ask for (also the capacity fallbacks)",
    ),
    Setting("network", "GCP_NETWORK", required=True, help="VPC network: a name or global/networks/<name>"),
    Setting("subnetwork", "GCP_SUBNETWORK", help="subnetwork: a name in the zone's region, or a path"),
    Setting("disk-type", "GCP_DISK_TYPE", default="pd-standard", help="boot disk type"),
    Setting("disable-cvm", "DISABLECVM", kind=bool, default=False, help="create non-confidential VMs"),
    Setting(
        "confidential-type",
        "GCP_CONFIDENTIAL_TYPE",
        help="confidential computing technology: TDX, SEV or SEV_SNP (required unless DISABLECVM)",
    ),
    Setting(
        "root-volume-size",
        "ROOT_VOLUME_SIZE",
        kind=int,
        default=10,
        help="boot disk size in GB (at least the image's size is used)",
    ),
    Setting(
        "use-public-ip",
        "USE_PUBLIC_IP",
        kind=bool,
        default=False,
        help="give pod VMs an external IP and connect to it",
    ),
    Setting("tags", "TAGS", kind=list, default=[], help="key=value pairs added to every pod VM as labels"),
    Setting(
        "gcp-api-endpoint",
        "GCP_API_ENDPOINT",
        help="Compute Engine API endpoint override (not an upstream key; tests use a local fake)",
    ),
]

_ZONE_RE = re.compile(r"[a-z]+-[a-z0-9]+-[a-z]")
_IMAGE_RE = re.compile(r"(?:https://[^/]+/compute/v1/)?projects/([^/]+)/global/images/([^/]+)")
_NAME_RE = re.compile(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?")


@dataclass(frozen=True)
class ImageRef:
    """A pod VM image: `source` goes into the instance body, `project`/`name` are for images.get."""

    source: str
    project: str
    name: str


def parse_image(value: str, project: str) -> ImageRef:
    """An image name (in `project`) or a partial/full image path; ValueError otherwise."""
    if "/" not in value:
        if not _NAME_RE.fullmatch(value):
            raise ValueError(f"image name {value!r} is not a valid GCP resource name")
        return ImageRef(f"projects/{project}/global/images/{value}", project, value)
    match = _IMAGE_RE.fullmatch(value)
    if match is None:
        raise ValueError(f"image {value!r} is neither a name nor projects/<project>/global/images/<name>")
    return ImageRef(value, match.group(1), match.group(2))


@dataclass(frozen=True)
class GcpConfig:
    """The validated settings. Credentials are kept apart, so that this can be logged."""

    project: str
    zone: str
    network: str
    image: ImageRef | None = None
    machine_type: str = "e2-medium"
    machine_types: tuple[str, ...] = ()
    subnetwork: str = ""
    disk_type: str = "pd-standard"
    confidential_type: str | None = None  # None: confidential computing disabled
    root_volume_size_gb: int = 10
    use_public_ip: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    endpoint: str = ""

    @property
    def region(self) -> str:
        return self.zone.rsplit("-", 1)[0]


def _text(values: Mapping[str, SettingValue | None], key: str) -> str:
    value = values.get(key)
    return value.strip() if isinstance(value, str) else ""


def _names(values: Mapping[str, SettingValue | None], key: str) -> list[str]:
    value = values.get(key)
    return [str(v) for v in value] if isinstance(value, list) else []


def _expand(value: str, template: str) -> str:
    """A bare resource name as a partial path; paths and URLs are kept as given."""
    return value if "/" in value or not value else template.format(value)


def parse_config(values: Mapping[str, SettingValue | None]) -> GcpConfig:
    """Check the settings (keyed by `Setting.dest`) together; ConfigError lists every problem."""
    problems: list[str] = []
    project, zone, network = _text(values, "gcp_project_id"), _text(values, "zone"), _text(values, "network")
    for key, value, flag in (
        ("GCP_PROJECT_ID", project, "gcp-project-id"),
        ("GCP_ZONE", zone, "zone"),
        ("GCP_NETWORK", network, "network"),
    ):
        if not value:
            problems.append(f"-{flag} or {key} is required")
    if zone and not _ZONE_RE.fullmatch(zone):
        problems.append(f"GCP_ZONE {zone!r} is not a zone name like us-central1-a")

    confidential: str | None = None
    if not values.get("disable_cvm"):
        confidential = _text(values, "confidential_type").upper()
        if not confidential:
            problems.append(
                "GCP_CONFIDENTIAL_TYPE is required when DISABLECVM is false: "
                f"one of {', '.join(CONFIDENTIAL_TYPES)}"
            )
        elif confidential not in CONFIDENTIAL_TYPES:
            problems.append(
                f"GCP_CONFIDENTIAL_TYPE {_text(values, 'confidential_type')!r} is not one of "
                f"{', '.join(CONFIDENTIAL_TYPES)}"
            )

    image: ImageRef | None = None
    if _text(values, "image_name"):
        try:
            image = parse_image(_text(values, "image_name"), project)
        except ValueError as exc:
            problems.append(f"PODVM_IMAGE_NAME: {exc}")

    machine_type = _text(values, "machine_type") or "e2-medium"
    machine_types = tuple(_names(values, "machine_types"))
    if machine_types and machine_type not in machine_types:
        problems.append(
            f"GCP_MACHINE_TYPE {machine_type!r} is not in GCP_INSTANCE_TYPES "
            f"({', '.join(machine_types)}): pods without a machine_type annotation could not start"
        )

    root_size = values.get("root_volume_size")
    if not isinstance(root_size, int) or isinstance(root_size, bool) or root_size < 1:
        problems.append(f"ROOT_VOLUME_SIZE must be a positive number of GB, not {root_size!r}")
        root_size = 10

    labels: dict[str, str] = {}
    try:
        labels = parse_tags(_names(values, "tags"))
    except ValueError as exc:
        problems.append(f"TAGS: {exc}")

    endpoint = _text(values, "gcp_api_endpoint")
    if endpoint and not endpoint.startswith(("http://", "https://")):
        problems.append(f"GCP_API_ENDPOINT {endpoint!r} must be an http:// or https:// URL")

    if problems:
        raise ConfigError(problems)
    region = zone.rsplit("-", 1)[0]
    return GcpConfig(
        project=project,
        zone=zone,
        network=_expand(network, f"projects/{project}/global/networks/{{}}"),
        image=image,
        machine_type=machine_type,
        machine_types=machine_types,
        subnetwork=_expand(
            _text(values, "subnetwork"), f"projects/{project}/regions/{region}/subnetworks/{{}}"
        ),
        disk_type=_text(values, "disk_type") or "pd-standard",
        confidential_type=confidential,
        root_volume_size_gb=root_size,
        use_public_ip=bool(values.get("use_public_ip")),
        labels=labels,
        endpoint=endpoint,
    )


def load_credentials(secret: str, endpoint: str) -> ga_credentials.Credentials:
    """Credentials from the GCP_CREDENTIALS JSON, else Application Default Credentials.

    Upstream writes the JSON to a temporary file for GOOGLE_APPLICATION_CREDENTIALS; we load it in
    memory, so the key never touches disk. A plain-http endpoint (a local fake) gets anonymous
    credentials: a bearer token must never travel unencrypted. The JSON is still checked then, so a
    bad secret fails at start either way. Error texts never quote the secret.
    """
    credentials: ga_credentials.Credentials | None = None
    if secret:
        try:
            info: Any = json.loads(secret)
        except ValueError:
            raise ConfigError(["GCP_CREDENTIALS is not valid JSON"]) from None
        if not isinstance(info, dict):
            raise ConfigError(["GCP_CREDENTIALS must be a JSON object (a service account key)"])
        if info.get("type") != "service_account":
            raise ConfigError(
                [
                    f"GCP_CREDENTIALS has type {info.get('type')!r}: only a service account key "
                    "('service_account') is accepted; leave it empty to use Application Default Credentials"
                ]
            )
        try:
            credentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
                info, scopes=list(SCOPES)
            )
        except (ValueError, TypeError) as exc:
            # Only the library's own sentence: a chained cause could echo parts of the key.
            first = exc.args[0] if exc.args else ""
            reason = first if isinstance(first, str) and "PRIVATE KEY" not in first else "unusable key"
            raise ConfigError([f"GCP_CREDENTIALS: {reason}"]) from None
    if endpoint.startswith("http://"):
        return ga_credentials.AnonymousCredentials()  # type: ignore[no-untyped-call]
    if credentials is None:
        try:
            credentials, _ = google.auth.default(scopes=list(SCOPES))
        except ga_exceptions.DefaultCredentialsError as exc:
            raise ConfigError(
                [f"GCP_CREDENTIALS is empty and no Application Default Credentials: {exc}"]
            ) from None
    return credentials
