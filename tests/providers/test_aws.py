"""The AWS provider driven through real boto3 against a moto server on 127.0.0.1.

moto accepts and then drops CpuOptions, so the confidential options are asserted on what boto3 sends:
the parameters (`provide-client-params`) and the serialized request body (`before-send`). Faults
(throttling, capacity) are injected with a `before-send` hook that answers in EC2's own XML error format.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs

import boto3
import moto.settings
import pytest
from botocore.awsrequest import AWSPreparedRequest, AWSResponse, HTTPHeaders
from moto.server import ThreadedMotoServer

from providers import registry
from providers.aws import PLUGIN, AwsPlugin, AwsProvider
from providers.aws.config import make_client, parse_config
from providers.aws.errors import classify
from providers.base import (
    OWNER_TAG,
    SANDBOX_TAG,
    CapacityError,
    CreateRequest,
    InstanceNotFound,
    InstanceSpec,
    InvalidRequestError,
    ProviderError,
)
from providers.retry import CloudCaller, RateLimiter, RetryPolicy
from providers.settings import ConfigError, resolve
from tests.providers.fake_clock import FakeClock
from tests.providers.stop_support import StopBench

REGION = "us-east-1"
OWNER = "node-a"
FAST = RetryPolicy(attempts=5, initial_s=0.001, max_s=0.01)
LIVE = ["pending", "running", "stopping", "stopped"]


@pytest.fixture(scope="module")
def aws_moto_url() -> Iterator[str]:
    # moto's 1,300 stock AMIs are not needed (tests register their own) and slow every reset.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
        server.stop()


@pytest.fixture
def aws_url(aws_moto_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A freshly reset moto server, with the host's own AWS configuration out of the way."""
    reset = urllib.request.Request(f"{aws_moto_url}/moto-api/reset", method="POST")
    with urllib.request.urlopen(reset) as response:
        assert response.status == 200
    for var in ("AWS_PROFILE", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_ENDPOINT_URL", "AWS_ROLE_ARN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    return aws_moto_url


@pytest.fixture
def aws_ec2(aws_url: str) -> Any:
    """A plain boto3 client for the test's own look at moto's state."""
    return boto3.client(
        "ec2",
        region_name=REGION,
        endpoint_url=aws_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def aws_ami(aws_ec2: Any) -> str:
    """A UEFI pod VM image; moto gives it root device /dev/sda1 of 15 GiB."""
    image_id: str = aws_ec2.register_image(Name="podvm", BootMode="uefi")["ImageId"]
    return image_id


def aws_env(url: str, ami: str, **overrides: str) -> dict[str, str]:
    env = {
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "PODVM_AMI_ID": ami,
        "PODVM_INSTANCE_TYPES": "m6a.large,c6a.large,m6a.xlarge",
    }
    env.update(overrides)
    return env


def make_provider(
    url: str,
    ami: str,
    *,
    owner: str = OWNER,
    policy: RetryPolicy = FAST,
    limiter: RateLimiter | None = None,
    **overrides: str,
) -> AwsProvider:
    config = parse_config(resolve(PLUGIN.settings, None, aws_env(url, ami, **overrides)))
    caller = CloudCaller(classify, limiter or RateLimiter(1000.0, 1000), policy)
    return AwsProvider(config, owner, make_client(config), caller, poll_interval_s=0.01)


def request(
    sandbox: str = "sb-1", spec: InstanceSpec | None = None, tags: dict[str, str] | None = None
) -> CreateRequest:
    return CreateRequest(
        name=f"podvm-pod-{sandbox}",
        sandbox_id=sandbox,
        user_data=b"#cloud-config\n",
        spec=spec or InstanceSpec(),
        tags=tags or {},
    )


@dataclass
class Wire:
    """What the provider's client sent: RunInstances parameters, and every request body by operation."""

    run_params: list[dict[str, Any]] = field(default_factory=list)
    bodies: list[dict[str, str]] = field(default_factory=list)

    def sent(self, action: str) -> list[dict[str, str]]:
        return [b for b in self.bodies if b.get("Action") == action]


def body_of(request: AWSPreparedRequest) -> dict[str, str]:
    raw = request.body or b""
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return {key: values[0] for key, values in parse_qs(text).items()}


def capture(provider: AwsProvider) -> Wire:
    wire = Wire()

    def on_params(params: dict[str, Any], **_: Any) -> None:
        wire.run_params.append(dict(params))

    def on_send(request: AWSPreparedRequest, **_: Any) -> None:
        wire.bodies.append(body_of(request))

    events = provider.client.meta.events
    events.register("provide-client-params.ec2.RunInstances", on_params)
    events.register_first("before-send.ec2", on_send)
    return wire


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body


def ec2_error(status: int, code: str, message: str) -> AWSResponse:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
        f"<Code>{code}</Code><Message>{message}</Message>"
        "</Error></Errors><RequestID>fault-injected</RequestID></Response>"
    ).encode()
    headers = HTTPHeaders()
    headers["Content-Type"] = "text/xml"
    return AWSResponse("https://ec2.fault.invalid/", status, headers, _Raw(body))


def inject(
    provider: AwsProvider, operation: str, fault: Callable[[dict[str, str]], AWSResponse | None]
) -> None:
    """Answer `operation` with `fault(body)` whenever it returns a response, instead of moto."""

    def on_send(request: AWSPreparedRequest, **_: Any) -> AWSResponse | None:
        return fault(body_of(request))

    # botocore uses a before-send handler's return value as the response (its stubs say None).
    provider.client.meta.events.register(f"before-send.ec2.{operation}", cast(Callable[..., None], on_send))


def live_instances(ec2: Any) -> list[dict[str, Any]]:
    pages = ec2.describe_instances(Filters=[{"Name": "instance-state-name", "Values": LIVE}])["Reservations"]
    return [i for r in pages for i in r["Instances"]]


def tags_of(resource: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


# -- lifecycle -----------------------------------------------------------------------------------


async def test_create_list_delete(aws_url: str, aws_ami: str, aws_ec2: Any) -> None:
    provider = make_provider(aws_url, aws_ami)
    await provider.validate()
    instance = await provider.create_instance(request())
    assert instance.id.startswith("i-")
    assert instance.name == "podvm-pod-sb-1"
    assert instance.sandbox_id == "sb-1"
    assert len(instance.ips) == 1 and instance.ips[0].is_private
    moto_view = live_instances(aws_ec2)
    assert [i["InstanceId"] for i in moto_view] == [instance.id]
    assert str(instance.ips[0]) == moto_view[0]["PrivateIpAddress"]

    assert await provider.list_instances() == [instance]

    await provider.delete_instance(instance.id)
    assert await provider.list_instances() == []
    assert live_instances(aws_ec2) == []
    with pytest.raises(InstanceNotFound):
        await provider.delete_instance(instance.id)
    with pytest.raises(InstanceNotFound):
        await provider.delete_instance("i-0123456789abcdef0")
    await provider.teardown()


async def test_the_wire_carries_sev_snp_imdsv2_user_data_and_root_volume(aws_url: str, aws_ami: str) -> None:
    provider = make_provider(aws_url, aws_ami, SSH_KP_NAME="podvm-key")
    wire = capture(provider)
    await provider.create_instance(request())
    [params] = wire.run_params
    assert params["CpuOptions"] == {"AmdSevSnp": "enabled"}
    assert params["MetadataOptions"]["HttpTokens"] == "required"
    assert params["InstanceType"] == "m6a.large"
    assert params["ImageId"] == aws_ami
    assert params["KeyName"] == "podvm-key"
    assert (params["MinCount"], params["MaxCount"]) == (1, 1)
    [body] = wire.sent("RunInstances")
    assert body["CpuOptions.AmdSevSnp"] == "enabled"
    assert body["MetadataOptions.HttpTokens"] == "required"
    assert base64.b64decode(body["UserData"]) == b"#cloud-config\n"
    assert body["BlockDeviceMapping.1.DeviceName"] == "/dev/sda1"
    assert body["BlockDeviceMapping.1.Ebs.VolumeSize"] == "30"
    assert body["BlockDeviceMapping.1.Ebs.DeleteOnTermination"] == "true"
    assert len(body["ClientToken"]) == 64
    await provider.teardown()


async def test_disable_cvm_sends_no_cpu_options(aws_url: str, aws_ami: str) -> None:
    provider = make_provider(aws_url, aws_ami, DISABLECVM="true", PODVM_INSTANCE_TYPES="t3.small,m6a.large")
    wire = capture(provider)
    await provider.create_instance(request())
    assert "CpuOptions" not in wire.run_params[0]
    assert not any(key.startswith("CpuOptions") for key in wire.sent("RunInstances")[0])
    await provider.teardown()


async def test_root_volume_is_never_smaller_than_the_image(aws_url: str, aws_ami: str, aws_ec2: Any) -> None:
    small = make_provider(aws_url, aws_ami, ROOT_VOLUME_SIZE="10")
    wire = capture(small)
    instance = await small.create_instance(request("sb-small"))
    assert wire.sent("RunInstances")[0]["BlockDeviceMapping.1.Ebs.VolumeSize"] == "15"
    volumes = aws_ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [instance.id]}])
    assert [v["Size"] for v in volumes["Volumes"]] == [15]
    await small.teardown()

    image_default = make_provider(aws_url, aws_ami, ROOT_VOLUME_SIZE="0")
    wire = capture(image_default)
    await image_default.create_instance(request("sb-zero"))
    assert "BlockDeviceMappings" not in wire.run_params[0]
    await image_default.teardown()


async def test_tags_on_instance_and_volume(aws_url: str, aws_ami: str, aws_ec2: Any) -> None:
    provider = make_provider(aws_url, aws_ami, TAGS="team=confidential, cost-centre=42")
    instance = await provider.create_instance(request(tags={"pod": "web"}))
    expected = {
        "Name": "podvm-pod-sb-1",
        OWNER_TAG: OWNER,
        SANDBOX_TAG: "sb-1",
        "team": "confidential",
        "cost-centre": "42",
        "pod": "web",
    }
    [described] = live_instances(aws_ec2)
    assert tags_of(described) == expected
    volumes = aws_ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [instance.id]}])
    assert [tags_of(v) for v in volumes["Volumes"]] == [expected]
    await provider.teardown()


async def test_request_tags_cannot_override_ownership(aws_url: str, aws_ami: str, aws_ec2: Any) -> None:
    provider = make_provider(aws_url, aws_ami)
    await provider.create_instance(request(tags={"Name": "evil", OWNER_TAG: "someone-else"}))
    [described] = live_instances(aws_ec2)
    assert tags_of(described)[OWNER_TAG] == OWNER
    assert tags_of(described)["Name"] == "podvm-pod-sb-1"
    await provider.teardown()


async def test_list_shows_only_this_owners_live_instances(aws_url: str, aws_ami: str) -> None:
    mine = make_provider(aws_url, aws_ami)
    theirs = make_provider(aws_url, aws_ami, owner="node-b")
    kept = await mine.create_instance(request("sb-1"))
    gone = await mine.create_instance(request("sb-2"))
    other = await theirs.create_instance(request("sb-3"))
    await mine.delete_instance(gone.id)
    assert await mine.list_instances() == [kept]
    assert await theirs.list_instances() == [other]
    await mine.teardown()
    await theirs.teardown()


async def test_delete_releases_elastic_ips(aws_url: str, aws_ami: str, aws_ec2: Any) -> None:
    provider = make_provider(aws_url, aws_ami)
    instance = await provider.create_instance(request())
    eip = aws_ec2.allocate_address(Domain="vpc")
    aws_ec2.associate_address(AllocationId=eip["AllocationId"], InstanceId=instance.id)
    await provider.delete_instance(instance.id)
    assert aws_ec2.describe_addresses()["Addresses"] == []
    assert live_instances(aws_ec2) == []
    await provider.teardown()


async def test_public_ip_replaces_the_first_address(aws_url: str, aws_ami: str, aws_ec2: Any) -> None:
    vpc = aws_ec2.create_vpc(CidrBlock="10.7.0.0/16")["Vpc"]["VpcId"]
    subnet = aws_ec2.create_subnet(VpcId=vpc, CidrBlock="10.7.1.0/24")["Subnet"]["SubnetId"]
    group = aws_ec2.create_security_group(GroupName="podvm", Description="pod VMs", VpcId=vpc)["GroupId"]
    provider = make_provider(aws_url, aws_ami, USE_PUBLIC_IP="true", AWS_SUBNET_ID=subnet, AWS_SG_IDS=group)
    wire = capture(provider)
    instance = await provider.create_instance(request())
    [params] = wire.run_params
    assert params["NetworkInterfaces"] == [
        {
            "DeviceIndex": 0,
            "AssociatePublicIpAddress": True,
            "DeleteOnTermination": True,
            "SubnetId": subnet,
            "Groups": [group],
        }
    ]
    assert "SubnetId" not in params and "SecurityGroupIds" not in params
    [described] = live_instances(aws_ec2)
    assert [str(ip) for ip in instance.ips] == [described["PublicIpAddress"]]
    assert await provider.list_instances() == [instance]
    await provider.teardown()


async def test_subnet_and_security_groups_are_sent(aws_url: str, aws_ami: str, aws_ec2: Any) -> None:
    vpc = aws_ec2.create_vpc(CidrBlock="10.8.0.0/16")["Vpc"]["VpcId"]
    subnet = aws_ec2.create_subnet(VpcId=vpc, CidrBlock="10.8.1.0/24")["Subnet"]["SubnetId"]
    group = aws_ec2.create_security_group(GroupName="podvm", Description="pod VMs", VpcId=vpc)["GroupId"]
    provider = make_provider(aws_url, aws_ami, AWS_SUBNET_ID=subnet, AWS_SG_IDS=group)
    instance = await provider.create_instance(request())
    [described] = live_instances(aws_ec2)
    assert described["SubnetId"] == subnet
    assert [g["GroupId"] for g in described["SecurityGroups"]] == [group]
    assert str(instance.ips[0]).startswith("10.8.1.")
    await provider.teardown()


# -- instance types ------------------------------------------------------------------------------


async def test_resources_pick_the_best_fitting_allowed_type(aws_url: str, aws_ami: str, aws_ec2: Any) -> None:
    provider = make_provider(aws_url, aws_ami)
    await provider.create_instance(request(spec=InstanceSpec(vcpus=4, memory_mib=16384)))
    assert [i["InstanceType"] for i in live_instances(aws_ec2)] == ["m6a.xlarge"]
    with pytest.raises(InvalidRequestError, match="not part of supported instance types list"):
        await provider.create_instance(request("sb-2", spec=InstanceSpec(instance_type="r6a.large")))
    assert len(live_instances(aws_ec2)) == 1
    await provider.teardown()


async def test_validate_rejects_types_without_sev_snp(aws_url: str, aws_ami: str) -> None:
    provider = make_provider(aws_url, aws_ami, PODVM_INSTANCE_TYPES="m6a.large,t3.micro")
    with pytest.raises(ConfigError) as err:
        await provider.validate()
    assert len(err.value.problems) == 1
    assert "'t3.micro' does not support AMD SEV-SNP" in err.value.problems[0]
    await provider.teardown()

    default_too = make_provider(aws_url, aws_ami, PODVM_INSTANCE_TYPES="", PODVM_INSTANCE_TYPE="t3.small")
    with pytest.raises(ConfigError, match=r"'t3\.small' does not support AMD SEV-SNP"):
        await default_too.validate()
    await default_too.teardown()

    plain = make_provider(aws_url, aws_ami, PODVM_INSTANCE_TYPES="m6a.large,t3.micro", DISABLECVM="true")
    await plain.validate()
    await plain.teardown()


async def test_create_validates_on_first_use(aws_url: str, aws_ami: str, aws_ec2: Any) -> None:
    provider = make_provider(aws_url, aws_ami, PODVM_INSTANCE_TYPES="t3.micro")
    with pytest.raises(ConfigError, match=r"t3\.micro"):
        await provider.create_instance(request())
    assert live_instances(aws_ec2) == []
    await provider.teardown()


async def test_validate_reports_unknown_types_and_images_with_awss_reason(aws_url: str, aws_ami: str) -> None:
    provider = make_provider(aws_url, "ami-0123456789abcdef0", PODVM_INSTANCE_TYPES="m6a.large,m99.huge")
    with pytest.raises(ConfigError) as err:
        await provider.validate()
    problems = "\n".join(err.value.problems)
    assert "InvalidAMIID.NotFound" in problems and "ami-0123456789abcdef0" in problems
    assert "InvalidInstanceType" in problems and "m99.huge" in problems
    await provider.teardown()


# -- faults --------------------------------------------------------------------------------------


async def test_throttling_is_retried_then_succeeds(aws_url: str, aws_ami: str, aws_ec2: Any) -> None:
    provider = make_provider(aws_url, aws_ami)
    wire = capture(provider)
    throttles = [3]

    def throttle(_body: dict[str, str]) -> AWSResponse | None:
        if throttles[0] == 0:
            return None
        throttles[0] -= 1
        return ec2_error(503, "RequestLimitExceeded", "Request limit exceeded.")

    inject(provider, "RunInstances", throttle)
    instance = await provider.create_instance(request())
    assert len(wire.sent("RunInstances")) == 4
    # Every attempt is the same launch: the same idempotency token.
    assert len({body["ClientToken"] for body in wire.sent("RunInstances")}) == 1
    assert [i["InstanceId"] for i in live_instances(aws_ec2)] == [instance.id]
    await provider.teardown()


async def test_botocore_does_not_retry_on_its_own(aws_url: str, aws_ami: str) -> None:
    provider = make_provider(aws_url, aws_ami, policy=RetryPolicy(attempts=1))
    wire = capture(provider)
    inject(
        provider, "RunInstances", lambda _: ec2_error(503, "RequestLimitExceeded", "Request limit exceeded.")
    )
    with pytest.raises(ProviderError, match=r"RequestLimitExceeded.*gave up after 1 attempts"):
        await provider.create_instance(request())
    assert len(wire.sent("RunInstances")) == 1
    await provider.teardown()


async def test_capacity_error_falls_back_to_the_next_type(aws_url: str, aws_ami: str, aws_ec2: Any) -> None:
    provider = make_provider(aws_url, aws_ami)
    wire = capture(provider)
    message = "We currently do not have sufficient m6a.large capacity in the Availability Zone you requested."

    def no_m6a_large(body: dict[str, str]) -> AWSResponse | None:
        if body.get("InstanceType") == "m6a.large":
            return ec2_error(500, "InsufficientInstanceCapacity", message)
        return None

    inject(provider, "RunInstances", no_m6a_large)
    await provider.create_instance(request())
    # c6a.large is allowed but smaller than the default, so the fallback is m6a.xlarge.
    assert [b["InstanceType"] for b in wire.sent("RunInstances")] == ["m6a.large", "m6a.xlarge"]
    assert [i["InstanceType"] for i in live_instances(aws_ec2)] == ["m6a.xlarge"]
    await provider.teardown()


async def test_no_capacity_anywhere_reports_awss_reason(aws_url: str, aws_ami: str, aws_ec2: Any) -> None:
    provider = make_provider(aws_url, aws_ami)
    inject(provider, "RunInstances", lambda _: ec2_error(500, "InsufficientInstanceCapacity", "No capacity."))
    with pytest.raises(CapacityError) as err:
        await provider.create_instance(request())
    assert "m6a.large: " in str(err.value) and "m6a.xlarge: " in str(err.value)
    assert "InsufficientInstanceCapacity" in str(err.value)
    assert live_instances(aws_ec2) == []
    await provider.teardown()


async def test_bad_ami_fails_with_awss_reason_and_leaves_nothing(
    aws_url: str, aws_ami: str, aws_ec2: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(moto.settings, "ENABLE_AMI_VALIDATION", True)
    bad = InstanceSpec(image="ami-0badbadbadbadbad0")  # the pod's image annotation
    # With ROOT_VOLUME_SIZE=0 the image is not described first: RunInstances itself refuses it.
    provider = make_provider(aws_url, aws_ami, ROOT_VOLUME_SIZE="0")
    wire = capture(provider)
    with pytest.raises(InvalidRequestError) as err:
        await provider.create_instance(request(spec=bad))
    assert "InvalidAMIID.NotFound" in str(err.value) and "ami-0badbadbadbadbad0" in str(err.value)
    assert len(wire.sent("RunInstances")) == 1  # never retried
    await provider.teardown()
    # Otherwise DescribeImages (for the root device) refuses it before anything is launched.
    provider = make_provider(aws_url, aws_ami)
    wire = capture(provider)
    with pytest.raises(InvalidRequestError, match=r"InvalidAMIID\.NotFound"):
        await provider.create_instance(request(spec=bad))
    assert wire.sent("RunInstances") == []
    assert live_instances(aws_ec2) == []
    await provider.teardown()


async def test_bad_subnet_fails_with_awss_reason_and_leaves_nothing(
    aws_url: str, aws_ami: str, aws_ec2: Any
) -> None:
    provider = make_provider(aws_url, aws_ami, AWS_SUBNET_ID="subnet-0123456789abcdef0")
    wire = capture(provider)
    with pytest.raises(InvalidRequestError) as err:
        await provider.create_instance(request())
    assert "InvalidSubnetID.NotFound" in str(err.value) and "subnet-0123456789abcdef0" in str(err.value)
    assert len(wire.sent("RunInstances")) == 1  # never retried
    assert live_instances(aws_ec2) == []
    await provider.teardown()


# -- crash safety --------------------------------------------------------------------------------


async def test_create_after_a_restart_returns_the_existing_instance(
    aws_url: str, aws_ami: str, aws_ec2: Any
) -> None:
    first = make_provider(aws_url, aws_ami)
    created = await first.create_instance(request())
    await first.teardown()
    restarted = make_provider(aws_url, aws_ami)
    wire = capture(restarted)
    again = await restarted.create_instance(request())
    assert again == created
    assert wire.sent("RunInstances") == []
    assert len(live_instances(aws_ec2)) == 1
    # Only once: the next create for this sandbox (after a delete, say) launches anew.
    await restarted.delete_instance(again.id)
    fresh = await restarted.create_instance(request())
    assert fresh.id != created.id
    assert [i["InstanceId"] for i in live_instances(aws_ec2)] == [fresh.id]
    await restarted.teardown()


async def test_a_create_costs_one_api_call_once_validated(aws_url: str, aws_ami: str) -> None:
    provider = make_provider(aws_url, aws_ami)
    await provider.validate()
    wire = capture(provider)
    await asyncio.gather(*(provider.create_instance(request(f"sb-{n}")) for n in range(5)))
    assert [body["Action"] for body in wire.bodies] == ["RunInstances"] * 5
    await provider.teardown()


async def test_an_instance_deleted_since_the_restart_is_not_reused(
    aws_url: str, aws_ami: str, aws_ec2: Any
) -> None:
    first = make_provider(aws_url, aws_ami)
    created = await first.create_instance(request())
    restarted = make_provider(aws_url, aws_ami)
    await restarted.validate()
    await first.delete_instance(created.id)  # e.g. start-up reconciliation removed it
    fresh = await restarted.create_instance(request())
    assert fresh.id != created.id
    assert [i["InstanceId"] for i in live_instances(aws_ec2)] == [fresh.id]
    await first.teardown()
    await restarted.teardown()


async def test_create_after_dying_mid_launch_finds_the_launched_instance(
    aws_url: str, aws_ami: str, aws_ec2: Any
) -> None:
    dying = make_provider(aws_url, aws_ami)

    def killed(**_: Any) -> None:
        raise SystemExit("adaptor killed after RunInstances reached EC2")

    dying.client.meta.events.register("after-call.ec2.RunInstances", killed)
    with pytest.raises(SystemExit):
        await dying.create_instance(request())
    assert len(live_instances(aws_ec2)) == 1
    restarted = make_provider(aws_url, aws_ami)
    instance = await restarted.create_instance(request())
    assert [i["InstanceId"] for i in live_instances(aws_ec2)] == [instance.id]
    await restarted.teardown()


async def test_a_replayed_terminated_launch_is_launched_anew(aws_url: str, aws_ami: str) -> None:
    provider = make_provider(aws_url, aws_ami)
    wire = capture(provider)
    replays = [1]

    def replay_terminated(parsed: dict[str, Any], **_: Any) -> None:
        if replays[0]:
            replays[0] -= 1
            parsed["Instances"][0]["State"] = {"Code": 48, "Name": "terminated"}

    provider.client.meta.events.register("after-call.ec2.RunInstances", replay_terminated)
    instance = await provider.create_instance(request())
    tokens = [body["ClientToken"] for body in wire.sent("RunInstances")]
    assert len(tokens) == 2 and tokens[0] != tokens[1]
    assert instance.id in {i.id for i in await provider.list_instances()}
    await provider.teardown()


# -- launch templates ----------------------------------------------------------------------------


async def test_launch_template_mode_sends_only_the_template_user_data_and_tags(
    aws_url: str, aws_ami: str, aws_ec2: Any
) -> None:
    aws_ec2.create_launch_template(
        LaunchTemplateName="kata",
        LaunchTemplateData={
            "ImageId": aws_ami,
            "InstanceType": "m6a.large",
            "CpuOptions": {"AmdSevSnp": "enabled"},
        },
    )
    provider = make_provider(aws_url, aws_ami, USE_PODVM_LAUNCHTEMPLATE="true")
    wire = capture(provider)
    await provider.validate()
    instance = await provider.create_instance(request())
    [params] = wire.run_params
    assert set(params) == {
        "MinCount",
        "MaxCount",
        "LaunchTemplate",
        "UserData",
        "TagSpecifications",
        "ClientToken",
    }
    assert params["LaunchTemplate"] == {"LaunchTemplateName": "kata"}
    assert [i["InstanceId"] for i in live_instances(aws_ec2)] == [instance.id]
    assert wire.sent("DescribeInstanceTypes") == [] and wire.sent("DescribeImages") == []
    await provider.teardown()


async def test_launch_template_must_exist_and_should_enable_snp(
    aws_url: str, aws_ami: str, aws_ec2: Any, caplog: pytest.LogCaptureFixture
) -> None:
    missing = make_provider(
        aws_url, aws_ami, USE_PODVM_LAUNCHTEMPLATE="true", PODVM_LAUNCHTEMPLATE_NAME="nope"
    )
    with pytest.raises(ConfigError, match=r"'nope'.*InvalidLaunchTemplateName"):
        await missing.validate()
    await missing.teardown()

    aws_ec2.create_launch_template(LaunchTemplateName="plain", LaunchTemplateData={"ImageId": aws_ami})
    plain = make_provider(
        aws_url, aws_ami, USE_PODVM_LAUNCHTEMPLATE="true", PODVM_LAUNCHTEMPLATE_NAME="plain"
    )
    with caplog.at_level(logging.WARNING, logger="providers.aws.provider"):
        await plain.validate()
    assert "does not enable AMD SEV-SNP" in caplog.text
    await plain.teardown()


# -- rate limiting and assembly ------------------------------------------------------------------


async def test_a_burst_of_calls_stays_within_the_rate_limit(aws_url: str, aws_ami: str) -> None:
    clock = FakeClock()
    rate, burst, calls = 2.0, 2, 8
    limiter = RateLimiter(rate, burst, clock=clock, sleep=clock.sleep)
    provider = make_provider(aws_url, aws_ami, limiter=limiter)
    wire = capture(provider)
    await asyncio.gather(*(provider.list_instances() for _ in range(calls)))
    assert len(wire.sent("DescribeInstances")) == calls
    # Eight calls at 2/s after a burst of two cannot finish before three seconds of (fake) time.
    assert clock.now == pytest.approx((calls - burst) / rate)
    await provider.teardown()


async def test_the_registered_plugin_builds_a_working_provider(aws_url: str, aws_ami: str) -> None:
    plugin = registry.load("aws")
    assert isinstance(plugin, AwsPlugin) and plugin.name == "aws"
    provider = plugin.create(resolve(plugin.settings, None, aws_env(aws_url, aws_ami)), OWNER)
    assert isinstance(provider, AwsProvider)
    await provider.validate()
    instance = await provider.create_instance(request())
    assert await provider.list_instances() == [instance]
    await provider.delete_instance(instance.id)
    await provider.teardown()


# -- StopVM: one call when the record knows the instance ----------------------------------------------


def actions(wire: Wire) -> list[str]:
    return [body.get("Action", "") for body in wire.bodies]


async def test_stopvm_of_a_recorded_instance_is_one_terminate(
    aws_url: str, aws_ami: str, aws_ec2: Any, tmp_path: Path
) -> None:
    provider = make_provider(aws_url, aws_ami)
    instances = [await provider.create_instance(request(f"sb-{i}")) for i in range(3)]
    assert [i.delete_info for i in instances] == [{"public_ip": "no"}] * 3
    stops = StopBench(tmp_path, provider)
    for instance in instances:
        stops.record(instance)
    wire = capture(provider)
    for instance in instances:
        await stops.stop(instance.sandbox_id)
    assert actions(wire) == ["TerminateInstances"] * 3
    assert live_instances(aws_ec2) == []
    await stops.close()
    await provider.teardown()


async def test_stopvm_of_a_record_without_delete_info_takes_the_full_delete(
    aws_url: str, aws_ami: str, aws_ec2: Any, tmp_path: Path
) -> None:
    provider = make_provider(aws_url, aws_ami)
    instance = await provider.create_instance(request())
    stops = StopBench(tmp_path, provider)
    stops.record_legacy(instance)
    wire = capture(provider)
    await stops.stop(instance.sandbox_id)
    assert actions(wire) == ["DescribeInstances", "DescribeAddresses", "TerminateInstances"]
    assert live_instances(aws_ec2) == []
    await stops.close()
    await provider.teardown()


async def test_stopvm_with_a_public_ip_still_releases_elastic_ips(
    aws_url: str, aws_ami: str, aws_ec2: Any, tmp_path: Path
) -> None:
    vpc = aws_ec2.create_vpc(CidrBlock="10.7.0.0/16")["Vpc"]["VpcId"]
    subnet = aws_ec2.create_subnet(VpcId=vpc, CidrBlock="10.7.1.0/24")["Subnet"]["SubnetId"]
    provider = make_provider(aws_url, aws_ami, USE_PUBLIC_IP="true", AWS_SUBNET_ID=subnet)
    instance = await provider.create_instance(request())
    assert instance.delete_info == {"public_ip": "yes"}
    eip = aws_ec2.allocate_address(Domain="vpc")
    aws_ec2.associate_address(AllocationId=eip["AllocationId"], InstanceId=instance.id)
    stops = StopBench(tmp_path, provider)
    stops.record(instance)
    wire = capture(provider)
    await stops.stop(instance.sandbox_id)
    assert actions(wire) == [
        "DescribeAddresses",
        "DisassociateAddress",
        "ReleaseAddress",
        "TerminateInstances",
    ]
    assert aws_ec2.describe_addresses()["Addresses"] == []
    assert live_instances(aws_ec2) == []
    await stops.close()
    await provider.teardown()


async def test_stopvm_of_an_instance_already_gone_succeeds_in_one_call(
    aws_url: str, aws_ami: str, tmp_path: Path
) -> None:
    provider = make_provider(aws_url, aws_ami)
    terminated = await provider.create_instance(request("sb-terminated"))
    await provider.delete_recorded(terminated.id, terminated.delete_info)
    forgotten = replace(terminated, id="i-0123456789abcdef0", sandbox_id="sb-forgotten")
    stops = StopBench(tmp_path, provider)
    stops.record(terminated)
    stops.record(forgotten)
    wire = capture(provider)
    await stops.stop(terminated.sandbox_id)  # EC2 terminates a terminated instance again, quietly
    await stops.stop(forgotten.sandbox_id)  # InvalidInstanceID.NotFound: nothing left to delete
    assert actions(wire) == ["TerminateInstances"] * 2
    await stops.close()
    await provider.teardown()


async def test_a_throttled_terminate_is_retried(
    aws_url: str, aws_ami: str, aws_ec2: Any, tmp_path: Path
) -> None:
    provider = make_provider(aws_url, aws_ami)
    instance = await provider.create_instance(request())
    throttles = [2]

    def throttle(_body: dict[str, str]) -> AWSResponse | None:
        if throttles[0] == 0:
            return None
        throttles[0] -= 1
        return ec2_error(503, "RequestLimitExceeded", "Request limit exceeded.")

    stops = StopBench(tmp_path, provider)
    stops.record(instance)
    wire = capture(provider)
    inject(provider, "TerminateInstances", throttle)
    await stops.stop(instance.sandbox_id)
    assert actions(wire) == ["TerminateInstances"] * 3
    assert live_instances(aws_ec2) == []
    await stops.close()
    await provider.teardown()
