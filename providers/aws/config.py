"""AWS settings, with upstream cloud-api-adaptor's flag names and environment variables.

Upstream also fills a missing region, subnet, key pair and security groups from the worker node's
instance metadata (IMDS); we do not: set them explicitly (boto3 still finds the region and the
credentials through its own default chain, e.g. AWS_DEFAULT_REGION, ~/.aws/config, IRSA).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, NoRegionError, ProfileNotFound

from providers.base import OWNER_TAG, SANDBOX_TAG
from providers.settings import ConfigError, Setting, SettingValue

if TYPE_CHECKING:
    from mypy_boto3_ec2.client import EC2Client

DEFAULT_INSTANCE_TYPE = "m6a.large"

SETTINGS: list[Setting] = [
    Setting("aws-access-key-id", "AWS_ACCESS_KEY_ID", secret=True, help="access key id"),
    Setting("aws-secret-key", "AWS_SECRET_ACCESS_KEY", secret=True, help="secret access key"),
    Setting("aws-session-token", "AWS_SESSION_TOKEN", secret=True, help="session token"),
    Setting("aws-profile", None, help="profile from the AWS config files"),
    Setting("aws-region", "AWS_REGION", help="region"),
    Setting(
        "aws-endpoint-url",
        "AWS_ENDPOINT_URL",
        help="EC2 endpoint override, for private endpoints and tests (not an upstream flag)",
    ),
    Setting(
        "instance-type", "PODVM_INSTANCE_TYPE", default=DEFAULT_INSTANCE_TYPE, help="default instance type"
    ),
    Setting(
        "instance-types", "PODVM_INSTANCE_TYPES", list, [], help="allowed instance types, comma separated"
    ),
    Setting("imageid", "PODVM_AMI_ID", required=True, help="pod VM AMI id"),
    Setting("keyname", "SSH_KP_NAME", help="SSH key pair name for the pod VM"),
    Setting("subnetid", "AWS_SUBNET_ID", help="subnet id for the pod VMs"),
    Setting("securitygroupids", "AWS_SG_IDS", list, [], help="security group ids, comma separated"),
    Setting("use-lt", "USE_PODVM_LAUNCHTEMPLATE", bool, False, help="create pod VMs from a launch template"),
    Setting("aws-lt-name", "PODVM_LAUNCHTEMPLATE_NAME", default="kata", help="launch template name"),
    Setting("use-public-ip", "USE_PUBLIC_IP", bool, False, help="give the pod VM a public IP and use it"),
    Setting("root-volume-size", "ROOT_VOLUME_SIZE", int, 30, help="root volume size in GiB (0: the AMI's)"),
    Setting("disable-cvm", "DISABLECVM", bool, False, help="create plain VMs instead of SEV-SNP ones"),
    Setting("tags", "TAGS", list, [], help="extra tags for the pod VMs, key=value,..."),
]

# Keys we set ourselves on every instance; TAGS may not override them.
RESERVED_TAGS = frozenset({"Name", OWNER_TAG, SANDBOX_TAG})

# Our CloudCaller's worker threads; botocore's connection pool is sized to match. A call holds a
# thread until EC2 answers, so R calls/s of L s each need R x L threads, or the pool, not the rate
# limit, caps the rate: 20 RunInstances/s answered in 2 s need 40. 128 covers 20/s up to 6 s a call.
WORKERS = 128


@dataclass(frozen=True)
class AwsConfig:
    """The validated AWS settings. Credentials are kept out of repr() so they never reach a log."""

    image_id: str
    region: str = ""
    endpoint_url: str = ""
    profile: str = ""
    instance_type: str = DEFAULT_INSTANCE_TYPE
    instance_types: tuple[str, ...] = ()
    key_name: str = ""
    subnet_id: str = ""
    security_group_ids: tuple[str, ...] = ()
    use_launch_template: bool = False
    launch_template_name: str = "kata"
    use_public_ip: bool = False
    root_volume_size: int = 30
    disable_cvm: bool = False
    tags: Mapping[str, str] = field(default_factory=dict)
    access_key_id: str = field(default="", repr=False)
    secret_access_key: str = field(default="", repr=False)
    session_token: str = field(default="", repr=False)


def _text(values: Mapping[str, SettingValue | None], key: str) -> str:
    value = values.get(key)
    return value.strip() if isinstance(value, str) else ""


def _items(values: Mapping[str, SettingValue | None], key: str) -> tuple[str, ...]:
    value = values.get(key)
    return tuple(value) if isinstance(value, list) else ()


def _parse_tags(items: tuple[str, ...], problems: list[str]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(f"-tags or TAGS: {item!r} is not key=value")
        elif key in RESERVED_TAGS or key.lower().startswith("aws:"):
            problems.append(f"-tags or TAGS: the tag key {key!r} is reserved")
        else:
            tags[key] = value.strip()
    return tags


def parse_config(values: Mapping[str, SettingValue | None]) -> AwsConfig:
    """Check the resolved settings as a whole; ConfigError lists every problem found."""
    problems: list[str] = []
    access_key, secret_key = _text(values, "aws_access_key_id"), _text(values, "aws_secret_key")
    session_token = _text(values, "aws_session_token")
    if bool(access_key) != bool(secret_key):
        problems.append(
            "-aws-access-key-id and -aws-secret-key (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) go together"
        )
    if session_token and not access_key:
        problems.append("-aws-session-token (AWS_SESSION_TOKEN) needs an access key id and secret key")
    image_id = _text(values, "imageid")
    if not image_id:
        problems.append("-imageid or PODVM_AMI_ID is required: pod VM AMI id")
    instance_type = _text(values, "instance_type")
    if not instance_type:
        problems.append("-instance-type or PODVM_INSTANCE_TYPE must not be empty")
    use_lt = values.get("use_lt") is True
    lt_name = _text(values, "aws_lt_name")
    if use_lt and not lt_name:
        problems.append("-use-lt (USE_PODVM_LAUNCHTEMPLATE) needs -aws-lt-name (PODVM_LAUNCHTEMPLATE_NAME)")
    root_volume_size = values.get("root_volume_size")
    if not isinstance(root_volume_size, int) or isinstance(root_volume_size, bool) or root_volume_size < 0:
        problems.append(
            f"-root-volume-size or ROOT_VOLUME_SIZE must be 0 or more GiB, not {root_volume_size!r}"
        )
        root_volume_size = 0
    tags = _parse_tags(_items(values, "tags"), problems)
    if problems:
        raise ConfigError(problems)
    return AwsConfig(
        image_id=image_id,
        region=_text(values, "aws_region"),
        endpoint_url=_text(values, "aws_endpoint_url"),
        profile=_text(values, "aws_profile"),
        instance_type=instance_type,
        instance_types=_items(values, "instance_types"),
        key_name=_text(values, "keyname"),
        subnet_id=_text(values, "subnetid"),
        security_group_ids=_items(values, "securitygroupids"),
        use_launch_template=use_lt,
        launch_template_name=lt_name,
        use_public_ip=values.get("use_public_ip") is True,
        root_volume_size=root_volume_size,
        disable_cvm=values.get("disable_cvm") is True,
        tags=tags,
        access_key_id=access_key,
        secret_access_key=secret_key,
        session_token=session_token,
    )


def make_client(config: AwsConfig) -> EC2Client:
    """An EC2 client for these settings; ConfigError if boto3 finds no region, profile or credentials.

    botocore's own retries are switched off (one attempt in "standard" mode): CloudCaller retries with
    our backoff under our rate limiter, and two layers of retries would multiply the attempts (8 x 3)
    and send retried calls past the limiter.
    """
    try:
        session = boto3.session.Session(
            aws_access_key_id=config.access_key_id or None,
            aws_secret_access_key=config.secret_access_key or None,
            aws_session_token=config.session_token or None,
            region_name=config.region or None,
            profile_name=config.profile or None,
        )
        client = session.client(
            "ec2",
            endpoint_url=config.endpoint_url or None,
            config=Config(
                retries={"mode": "standard", "total_max_attempts": 1},
                max_pool_connections=WORKERS,
                connect_timeout=10,
                read_timeout=60,
            ),
        )
        credentials = session.get_credentials()
    except NoRegionError:
        raise ConfigError(
            ["-aws-region or AWS_REGION is required (no region in the environment or AWS config files)"]
        ) from None
    except ProfileNotFound as exc:
        raise ConfigError([f"-aws-profile: {exc}"]) from None
    except (BotoCoreError, ValueError) as exc:
        raise ConfigError([f"cannot build the EC2 client: {exc}"]) from None
    if credentials is None:
        raise ConfigError(
            [
                "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_ROLE_ARN "
                "and AWS_WEB_IDENTITY_TOKEN_FILE (IRSA), or -aws-profile"
            ]
        )
    return client
