"""The AWS provider: pod VMs as EC2 instances, AMD SEV-SNP unless confidential VMs are disabled.

Tag mapping: EC2 tags are key/value pairs, so OWNER_TAG and SANDBOX_TAG are used verbatim as tag keys,
next to `Name` (the instance name) and the operator's TAGS. They go on the instance and on its root
volume, and `list_instances` filters on the owner tag.

Call `validate()` once before serving (the adaptor does; `create_instance` does it on first use
otherwise): it checks the AMI, the launch template or the instance types against EC2 and raises
ConfigError, so that bad settings fail the adaptor at start rather than the first pod.

Crash safety: `validate()` also notes the live instances of this owner, i.e. what an earlier run of
the adaptor launched. `create_instance` returns such an instance when asked again for its sandbox and
name (the adaptor died after RunInstances) instead of launching a second one; a DescribeInstances per
pod would double the API calls of a 200-pod start for a case that only exists after a restart. A launch
too recent for that listing (DescribeInstances is eventually consistent) is caught by EC2 itself:
RunInstances carries a ClientToken derived from owner, sandbox and name, so a repeat is idempotent.

Delete: an instance created here carries `delete_info` saying whether its launch asked for a public
address; StopVM hands it back to `delete_recorded`, which terminates with one TerminateInstances when
none was (`delete_instance`, with only an id, first describes the instance and its Elastic IPs).
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from providers.aws.config import AwsConfig
from providers.aws.scratch import scratch_mapping
from providers.base import (
    OWNER_TAG,
    SANDBOX_TAG,
    CapacityError,
    CreateRequest,
    Instance,
    InstanceNotFound,
    InvalidRequestError,
    IPAddress,
    ProviderError,
)
from providers.instance_types import InstanceTypeSpec, fallback_types, select_instance_type
from providers.retry import CloudCaller
from providers.settings import ConfigError

if TYPE_CHECKING:
    from mypy_boto3_ec2.client import EC2Client
    from mypy_boto3_ec2.literals import InstanceTypeType
    from mypy_boto3_ec2.type_defs import (
        BlockDeviceMappingTypeDef,
        FilterTypeDef,
        ImageTypeDef,
        InstanceNetworkInterfaceSpecificationTypeDef,
        InstanceTypeDef,
        InstanceTypeInfoTypeDef,
        RunInstancesRequestTypeDef,
        TagSpecificationTypeDef,
        TagTypeDef,
    )

_log = logging.getLogger(__name__)

SNP_FEATURE = "amd-sev-snp"
_LIVE_STATES = ["pending", "running", "stopping", "stopped"]
_GONE_STATES = frozenset({"shutting-down", "terminated"})
# How many times a launch is retried with a fresh ClientToken when EC2 answers an old token with
# the terminated instance it once created (tokens stay bound to their instance after termination).
_MAX_RELAUNCHES = 3


@dataclass(frozen=True)
class _RootDevice:
    name: str
    size_gib: int


def _root_device_of(image: ImageTypeDef) -> _RootDevice:
    name = image.get("RootDeviceName", "")
    if not name:
        raise InvalidRequestError(f"image {image.get('ImageId', '?')} has no root device name")
    size = next(
        (
            m["Ebs"].get("VolumeSize", 0)
            for m in image.get("BlockDeviceMappings", [])
            if m.get("DeviceName") == name and "Ebs" in m
        ),
        0,
    )
    return _RootDevice(name, size)


def _type_spec(info: InstanceTypeInfoTypeDef) -> InstanceTypeSpec:
    gpus = sum(gpu.get("Count", 0) for gpu in info.get("GpuInfo", {}).get("Gpus", []))
    return InstanceTypeSpec(
        name=info.get("InstanceType", ""),
        vcpus=info.get("VCpuInfo", {}).get("DefaultVCpus", 0),
        memory_mib=info.get("MemoryInfo", {}).get("SizeInMiB", 0),
        gpus=gpus,
    )


def _ip(text: str, instance_id: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ProviderError(f"instance {instance_id}: EC2 returned a malformed address {text!r}") from None


def _private_ips(instance: InstanceTypeDef) -> list[str]:
    """The private address of each network interface, the primary (device index 0) first."""
    nics = sorted(
        instance.get("NetworkInterfaces", []), key=lambda nic: nic.get("Attachment", {}).get("DeviceIndex", 0)
    )
    return [nic.get("PrivateIpAddress", "") for nic in nics] or [instance.get("PrivateIpAddress", "")]


def _state(instance: InstanceTypeDef) -> str:
    return instance.get("State", {}).get("Name", "")


def _tag(instance: InstanceTypeDef, key: str) -> str:
    return next((t.get("Value", "") for t in instance.get("Tags", []) if t.get("Key") == key), "")


def _user_data(data: bytes) -> str:
    # botocore base64-encodes RunInstances' UserData itself and takes bytes as they are (the stubs
    # say str); encoding it here as upstream's Go code does would encode it twice.
    return cast(str, data)


class AwsProvider:
    """Pod VMs on EC2. See the module docstring for tags, crash safety and `validate()`."""

    name = "aws"

    def __init__(
        self,
        config: AwsConfig,
        owner: str,
        client: EC2Client,
        caller: CloudCaller,
        *,
        poll_interval_s: float = 2.0,
        running_timeout_s: float = 120.0,
    ) -> None:
        if not owner:
            raise ValueError("the owner id must not be empty: it is how instances are found again")
        self.client = client
        self._config = config
        self._owner = owner
        self._caller = caller
        self._poll_interval_s = poll_interval_s
        self._running_timeout_s = running_timeout_s
        self._allowed: list[InstanceTypeSpec] = []
        self._default_spec: InstanceTypeSpec | None = None
        self._roots: dict[str, _RootDevice] = {}
        self._launched_before: dict[tuple[str, str], str] = {}  # (sandbox id, name) -> instance id
        self._validated = False
        self._validate_lock = asyncio.Lock()

    # -- start-up checks -------------------------------------------------------------------------

    async def validate(self) -> None:
        """Check the settings against EC2 before serving; ConfigError lists every problem found.

        Launch-template mode: the template must exist (the template, not us, decides about SEV-SNP;
        a template without it is logged). Otherwise: the AMI must exist (its root device sizes the
        root volume) and, for confidential VMs, boot with UEFI; every allowed type and the default
        type must exist and, for confidential VMs, support AMD SEV-SNP. Their sizes are kept for
        instance-type selection. Finally it notes this owner's live instances (see the module doc).
        """
        problems: list[str] = []
        if self._config.use_launch_template:
            await self._check_launch_template(problems)
        else:
            await self._check_image(problems)
            await self._load_instance_types(problems)
        if problems:
            raise ConfigError(problems)
        self._launched_before = {}
        for instance in sorted(
            await self._describe(self._owned()), key=lambda i: str(i.get("LaunchTime", ""))
        ):
            key = (_tag(instance, SANDBOX_TAG), _tag(instance, "Name"))
            self._launched_before.setdefault(key, instance["InstanceId"])
        self._validated = True

    async def _ensure_validated(self) -> None:
        if self._validated:
            return
        async with self._validate_lock:
            if not self._validated:
                await self.validate()

    async def _check_launch_template(self, problems: list[str]) -> None:
        name = self._config.launch_template_name
        try:
            out = await self._caller.call(
                self.client.describe_launch_template_versions, LaunchTemplateName=name, Versions=["$Default"]
            )
        except InvalidRequestError as exc:
            problems.append(f"-aws-lt-name or PODVM_LAUNCHTEMPLATE_NAME {name!r}: {exc}")
            return
        versions = out.get("LaunchTemplateVersions", [])
        data = versions[0].get("LaunchTemplateData", {}) if versions else {}
        if not self._config.disable_cvm and data.get("CpuOptions", {}).get("AmdSevSnp") != "enabled":
            _log.warning(
                "launch template %r does not enable AMD SEV-SNP (CpuOptions.AmdSevSnp); in launch-template "
                "mode the template decides, so pod VMs will not be confidential",
                name,
            )

    async def _check_image(self, problems: list[str]) -> None:
        image_id = self._config.image_id
        try:
            image = await self._describe_image(image_id)
            self._roots[image_id] = _root_device_of(image)
        except InvalidRequestError as exc:
            problems.append(f"-imageid or PODVM_AMI_ID {image_id!r}: {exc}")
            return
        if not self._config.disable_cvm and image.get("BootMode") == "legacy-bios":
            problems.append(
                f"-imageid or PODVM_AMI_ID {image_id!r}: AMD SEV-SNP needs a UEFI image, this one boots "
                "legacy-bios (or set DISABLECVM=true)"
            )

    async def _load_instance_types(self, problems: list[str]) -> None:
        default = self._config.instance_type
        names = list(dict.fromkeys([*self._config.instance_types, default]))
        try:
            out = await self._caller.call(
                self.client.describe_instance_types,
                InstanceTypes=[cast("InstanceTypeType", n) for n in names],
            )
        except InvalidRequestError as exc:
            problems.append(
                f"-instance-types / -instance-type (PODVM_INSTANCE_TYPES / PODVM_INSTANCE_TYPE): {exc}"
            )
            return
        # The processor-info.supported-features filter exists on EC2 but not everywhere (moto): check here.
        infos = {info.get("InstanceType", ""): info for info in out.get("InstanceTypes", [])}
        specs: dict[str, InstanceTypeSpec] = {}
        for name in names:
            info = infos.get(name)
            if info is None:
                problems.append(f"instance type {name!r} is not known to EC2 in this region")
                continue
            features = info.get("ProcessorInfo", {}).get("SupportedFeatures", [])
            if not self._config.disable_cvm and SNP_FEATURE not in features:
                problems.append(
                    f"instance type {name!r} does not support AMD SEV-SNP: list only SEV-SNP types in "
                    "PODVM_INSTANCE_TYPES and PODVM_INSTANCE_TYPE (or set DISABLECVM=true)"
                )
            specs[name] = _type_spec(info)
        self._allowed = [specs[n] for n in self._config.instance_types if n in specs]
        self._default_spec = specs.get(default)

    async def _describe_image(self, image_id: str) -> ImageTypeDef:
        out = await self._caller.call(self.client.describe_images, ImageIds=[image_id])
        images = out.get("Images", [])
        if not images:
            raise InvalidRequestError(f"image {image_id} does not exist or is not visible to this account")
        return images[0]

    async def _root_device(self, image_id: str) -> _RootDevice:
        root = self._roots.get(image_id)
        if root is None:
            root = self._roots[image_id] = _root_device_of(await self._describe_image(image_id))
        return root

    # -- create ----------------------------------------------------------------------------------

    async def create_instance(self, request: CreateRequest) -> Instance:
        await self._ensure_validated()
        existing = await self._previous_launch(request)
        if existing is not None:
            _log.info(
                "instance %s for sandbox %s already exists, reusing it",
                existing["InstanceId"],
                request.sandbox_id,
            )
            return await self._finish(request, existing, {})  # launched by another run: no delete_info
        if self._config.use_launch_template:
            launched = await self._launch(request, "")
        else:
            launched = await self._launch_with_fallback(request)
        _log.info(
            "created instance %s (%s) for sandbox %s",
            launched["InstanceId"],
            launched.get("InstanceType", "launch template"),
            request.sandbox_id,
        )
        return await self._finish(request, launched, self._delete_info())

    async def _launch_with_fallback(self, request: CreateRequest) -> InstanceTypeDef:
        spec = request.spec
        selected = select_instance_type(
            spec, self._config.instance_type, self._allowed, default_spec=self._default_spec
        )
        image_id = spec.image or self._config.image_id
        root = await self._root_device(image_id) if self._config.root_volume_size > 0 else None
        reasons: list[str] = []
        for instance_type in fallback_types(selected, spec, self._allowed):
            try:
                return await self._launch(request, instance_type, image_id, root)
            except CapacityError as exc:
                _log.warning("no capacity for %s, trying the next allowed type: %s", instance_type, exc)
                reasons.append(f"{instance_type}: {exc}")
        raise CapacityError("no capacity for any suitable instance type: " + "; ".join(reasons))

    def _client_token(self, request: CreateRequest, instance_type: str, relaunch: int) -> str:
        key = "\0".join([self._owner, request.sandbox_id, request.name, instance_type, str(relaunch)])
        return hashlib.sha256(key.encode()).hexdigest()  # 64 characters, EC2's limit

    async def _launch(
        self, request: CreateRequest, instance_type: str, image_id: str = "", root: _RootDevice | None = None
    ) -> InstanceTypeDef:
        """One RunInstances (per ClientToken generation); raises CapacityError for the fallback loop."""
        for relaunch in range(_MAX_RELAUNCHES):
            params = self._run_params(request, instance_type, image_id, root)
            params["ClientToken"] = self._client_token(request, instance_type, relaunch)
            out = await self._caller.call(self.client.run_instances, **params)
            instance = out["Instances"][0]
            if _state(instance) not in _GONE_STATES:
                return instance
            _log.warning(
                "EC2 replayed terminated instance %s for this launch, launching anew", instance["InstanceId"]
            )
        raise ProviderError(f"EC2 keeps returning terminated instances for sandbox {request.sandbox_id}")

    def _tag_specifications(self, request: CreateRequest) -> list[TagSpecificationTypeDef]:
        merged = {
            **self._config.tags,
            **request.tags,
            "Name": request.name,
            OWNER_TAG: self._owner,
            SANDBOX_TAG: request.sandbox_id,
        }
        tags: list[TagTypeDef] = [{"Key": key, "Value": value} for key, value in merged.items()]
        return [{"ResourceType": "instance", "Tags": tags}, {"ResourceType": "volume", "Tags": tags}]

    def _run_params(
        self, request: CreateRequest, instance_type: str, image_id: str, root: _RootDevice | None
    ) -> RunInstancesRequestTypeDef:
        config = self._config
        params: RunInstancesRequestTypeDef = {
            "MinCount": 1,
            "MaxCount": 1,
            "UserData": _user_data(request.user_data),
            "TagSpecifications": self._tag_specifications(request),
        }
        if config.use_launch_template:
            # The template decides everything else, SEV-SNP included (see validate()).
            params["LaunchTemplate"] = {"LaunchTemplateName": config.launch_template_name}
            return params
        params["ImageId"] = image_id
        params["InstanceType"] = cast("InstanceTypeType", instance_type)
        params["MetadataOptions"] = {"HttpTokens": "required", "HttpEndpoint": "enabled"}
        if config.key_name:
            params["KeyName"] = config.key_name
        if config.use_public_ip:
            # EC2 refuses SubnetId/SecurityGroupIds next to NetworkInterfaces: they move into the NIC.
            nic: InstanceNetworkInterfaceSpecificationTypeDef = {
                "DeviceIndex": 0,
                "AssociatePublicIpAddress": True,
                "DeleteOnTermination": True,
            }
            if config.subnet_id:
                nic["SubnetId"] = config.subnet_id
            if config.security_group_ids:
                nic["Groups"] = list(config.security_group_ids)
            params["NetworkInterfaces"] = [nic]
        else:
            if config.subnet_id:
                params["SubnetId"] = config.subnet_id
            if config.security_group_ids:
                params["SecurityGroupIds"] = list(config.security_group_ids)
        if not config.disable_cvm:
            params["CpuOptions"] = {"AmdSevSnp": "enabled"}
        if root is not None:
            mapping: BlockDeviceMappingTypeDef = {
                "DeviceName": root.name,
                "Ebs": {
                    "VolumeSize": max(config.root_volume_size, root.size_gib),
                    "DeleteOnTermination": True,
                },
            }
            params["BlockDeviceMappings"] = [mapping]
        if request.scratch_space_gib > 0:
            params["BlockDeviceMappings"] = [
                *params.get("BlockDeviceMappings", []),
                scratch_mapping(request.scratch_space_gib),
            ]
        return params

    def _delete_info(self) -> dict[str, str]:
        """What delete_recorded needs: whether this launch asked for a public address."""
        return {"public_ip": "yes" if self._config.use_public_ip else "no"}

    async def _finish(
        self, request: CreateRequest, instance: InstanceTypeDef, delete_info: dict[str, str]
    ) -> Instance:
        """The Instance with its addresses; an instance we cannot use is terminated, not left behind."""
        instance_id = instance["InstanceId"]
        try:
            addresses = _private_ips(instance)
            if any(a in ("", "0.0.0.0") for a in addresses):
                raise ProviderError(f"instance {instance_id}: address not ready")
            ips = [_ip(a, instance_id) for a in addresses]
            if self._config.use_public_ip:
                ips[0] = await self._wait_public_ip(instance_id)  # as upstream: the public IP replaces ips[0]
        except ProviderError:
            await self._terminate_quietly(instance_id)
            raise
        return Instance(
            id=instance_id,
            name=request.name,
            ips=tuple(ips),
            sandbox_id=request.sandbox_id,
            delete_info=delete_info,
        )

    async def _wait_public_ip(self, instance_id: str) -> IPAddress:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._running_timeout_s
        while True:
            instance = await self._describe_one(instance_id)
            state = _state(instance) if instance is not None else "terminated"
            if instance is not None and state == "running":
                public = instance.get("PublicIpAddress", "")
                if not public:
                    raise ProviderError(f"instance {instance_id}: public IP address is empty")
                return _ip(public, instance_id)
            if state != "pending":
                raise ProviderError(f"instance {instance_id} is {state}, not running")
            if loop.time() >= deadline:
                raise ProviderError(
                    f"instance {instance_id} not running after {self._running_timeout_s:.0f}s"
                )
            await asyncio.sleep(self._poll_interval_s)

    async def _terminate_quietly(self, instance_id: str) -> None:
        try:
            await self._caller.call(self.client.terminate_instances, InstanceIds=[instance_id])
        except ProviderError as exc:
            # It carries our owner tag: start-up reconciliation deletes it later.
            _log.warning("could not terminate unusable instance %s: %s", instance_id, exc)

    # -- lookups ---------------------------------------------------------------------------------

    async def _describe(self, filters: list[FilterTypeDef]) -> list[InstanceTypeDef]:
        instances: list[InstanceTypeDef] = []
        token = ""
        while True:
            if token:
                out = await self._caller.call(
                    self.client.describe_instances, Filters=filters, MaxResults=1000, NextToken=token
                )
            else:
                out = await self._caller.call(
                    self.client.describe_instances, Filters=filters, MaxResults=1000
                )
            for reservation in out.get("Reservations", []):
                instances.extend(reservation.get("Instances", []))
            token = out.get("NextToken", "")
            if not token:
                return instances

    async def _describe_one(self, instance_id: str) -> InstanceTypeDef | None:
        try:
            out = await self._caller.call(self.client.describe_instances, InstanceIds=[instance_id])
        except InstanceNotFound:
            return None
        found = [i for r in out.get("Reservations", []) for i in r.get("Instances", [])]
        return found[0] if found else None

    def _owned(self, *extra: FilterTypeDef) -> list[FilterTypeDef]:
        return [
            {"Name": f"tag:{OWNER_TAG}", "Values": [self._owner]},
            {"Name": "instance-state-name", "Values": _LIVE_STATES},
            *extra,
        ]

    async def _previous_launch(self, request: CreateRequest) -> InstanceTypeDef | None:
        """The live instance an earlier run of the adaptor launched for this sandbox and name, if any."""
        instance_id = self._launched_before.pop((request.sandbox_id, request.name), None)
        if instance_id is None:
            return None
        instance = await self._describe_one(instance_id)
        return instance if instance is not None and _state(instance) not in _GONE_STATES else None

    # -- list / delete / teardown ----------------------------------------------------------------

    async def list_instances(self) -> list[Instance]:
        instances = []
        for found in await self._describe(self._owned()):
            instance_id = found["InstanceId"]
            addresses = [a for a in _private_ips(found) if a not in ("", "0.0.0.0")]
            ips = [_ip(a, instance_id) for a in addresses]
            public = found.get("PublicIpAddress", "")
            if self._config.use_public_ip and public and ips:
                ips[0] = _ip(public, instance_id)
            instances.append(
                Instance(
                    id=instance_id,
                    name=_tag(found, "Name"),
                    ips=tuple(ips),
                    sandbox_id=_tag(found, SANDBOX_TAG),
                )
            )
        return instances

    async def delete_instance(self, instance_id: str) -> None:
        """Release the Elastic IPs associated with the instance (as upstream), then terminate it.

        The root volume and the primary network interface are deleted with the instance
        (DeleteOnTermination). An instance that is unknown or already terminating is InstanceNotFound.
        """
        instance = await self._describe_one(instance_id)
        if instance is None or _state(instance) in _GONE_STATES:
            raise InstanceNotFound(f"instance {instance_id} does not exist")
        await self._release_addresses(instance_id)
        await self._terminate(instance_id)

    async def delete_recorded(self, instance_id: str, delete_info: Mapping[str, str]) -> None:
        """One TerminateInstances when the launch asked for no public address; else its Elastic IPs
        are released first, as in `delete_instance`. Terminating a terminated instance succeeds, and
        one EC2 has forgotten is InstanceNotFound, so no DescribeInstances is needed."""
        if delete_info.get("public_ip") != "no":
            await self._release_addresses(instance_id)
        await self._terminate(instance_id)

    async def _release_addresses(self, instance_id: str) -> None:
        out = await self._caller.call(
            self.client.describe_addresses, Filters=[{"Name": "instance-id", "Values": [instance_id]}]
        )
        for address in out.get("Addresses", []):
            if address.get("AssociationId"):
                await self._caller.call(
                    self.client.disassociate_address, AssociationId=address["AssociationId"]
                )
            if address.get("AllocationId"):
                await self._caller.call(self.client.release_address, AllocationId=address["AllocationId"])

    async def _terminate(self, instance_id: str) -> None:
        await self._caller.call(self.client.terminate_instances, InstanceIds=[instance_id])
        _log.info("terminated instance %s", instance_id)

    async def teardown(self) -> None:
        self._caller.close()
        self.client.close()
