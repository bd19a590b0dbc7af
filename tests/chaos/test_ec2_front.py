"""The EC2 front and the fake pod VMs, driven with real boto3 against a real moto server."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from protocols.apf import ForwarderConfig
from protocols.cloudconfig import APF_CONFIG_PATH, WriteFile, render_cloud_config
from providers.aws.errors import classify
from providers.retry import ErrorKind
from tests.chaos.fleet import BootError, forwarder_config
from tests.chaos.harness import AwsCloud, aws_cloud, ec2_client
from tests.fakes.ec2_front import FrontError, Launch, TokenBucket, burst_needed, launches, terminated_ids

if TYPE_CHECKING:
    from mypy_boto3_ec2.client import EC2Client


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_admits_its_burst_then_its_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(8.0, 3, clock)
    assert [bucket.admit() for _ in range(4)] == [True, True, True, False]
    clock.now += 0.125
    assert [bucket.admit(), bucket.admit()] == [True, False]
    clock.now += 60
    assert sum(bucket.admit() for _ in range(10)) == 3, "the bucket never holds more than its burst"
    with pytest.raises(ValueError):
        TokenBucket(0, 1)


def test_burst_needed_is_the_worst_excess_over_the_refill() -> None:
    assert burst_needed([], 20) == 0
    assert burst_needed([0.0] * 5, 20) == 5
    evenly = [i * 0.05 for i in range(100)]
    assert burst_needed(evenly, 20) == pytest.approx(1)
    assert burst_needed([*evenly[:50], 2.46, *evenly[50:]], 20) == pytest.approx(2, abs=0.01)


def test_bad_answers_are_front_errors() -> None:
    with pytest.raises(FrontError, match="unreadable"):
        terminated_ids(b"<not xml")
    with pytest.raises(FrontError, match="base64"):
        launches({"UserData": "%%%"}, b"<RunInstancesResponse/>")


def test_pod_vm_boots_only_from_user_data_with_apf_json() -> None:
    apf = ForwarderConfig(tls_server_cert="C", tls_server_key="K", tls_client_ca="A").to_json()
    good = render_cloud_config([WriteFile(APF_CONFIG_PATH, apf + "\n")]).encode()
    assert forwarder_config(good).tls_client_ca == "A"
    with pytest.raises(BootError, match=r"no /run/peerpod/apf\.json"):
        forwarder_config(render_cloud_config([]).encode())
    with pytest.raises(BootError):
        forwarder_config(b"#cloud-config\nwrite_files: 7\n")
    with pytest.raises(BootError, match="not JSON"):
        forwarder_config(render_cloud_config([WriteFile(APF_CONFIG_PATH, "{")]).encode())


class Recorder:
    """An ec2_front.Observer that only remembers."""

    def __init__(self) -> None:
        self.launches: list[Launch] = []
        self.terminations: list[str] = []

    def launched(self, launch: Launch) -> None:
        self.launches.append(launch)

    def terminated(self, instance_id: str) -> None:
        self.terminations.append(instance_id)


def client(url: str) -> EC2Client:
    # One attempt: the test must see the front's own answer, not botocore's retry of it.
    return ec2_client(url, Config(retries={"mode": "standard", "total_max_attempts": 1}))


def run_one(ec2: EC2Client, cloud: AwsCloud, name: str) -> dict[str, Any]:
    instance = ec2.run_instances(
        ImageId=cloud.image_id,
        InstanceType="m6a.large",
        SubnetId=cloud.subnet_id,
        MinCount=1,
        MaxCount=1,
        UserData="#cloud-config\n",
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": name}]}],
    )["Instances"][0]
    return dict(instance)


async def test_front_reports_launches_and_terminations_with_loopback_addresses(
    tmp_path: Path, moto_url: str
) -> None:
    async with aws_cloud(tmp_path / "cloud", moto_url=moto_url, boot_pod_vms=False) as cloud:
        recorder = Recorder()
        cloud.front.observer = recorder
        ec2 = client(cloud.url)
        instance = await asyncio.to_thread(run_one, ec2, cloud, "podvm-a-12345678")
        assert instance["PrivateIpAddress"].startswith("127.")
        assert recorder.launches == [
            Launch(
                instance["InstanceId"], instance["PrivateIpAddress"], "podvm-a-12345678", b"#cloud-config\n"
            )
        ]
        await asyncio.to_thread(ec2.terminate_instances, InstanceIds=[instance["InstanceId"]])
        assert recorder.terminations == [instance["InstanceId"]]
        assert cloud.front.calls["RunInstances"] == cloud.front.calls["TerminateInstances"] == 1


async def test_front_answers_excess_requests_with_request_limit_exceeded(
    tmp_path: Path, moto_url: str
) -> None:
    async with aws_cloud(
        tmp_path / "cloud", moto_url=moto_url, rate_limit=TokenBucket(0.001, 2), boot_pod_vms=False
    ) as cloud:
        ec2 = client(cloud.url)
        await asyncio.to_thread(ec2.describe_instances)
        await asyncio.to_thread(ec2.describe_instances)
        with pytest.raises(ClientError) as refused:
            await asyncio.to_thread(ec2.describe_instances)
        error = refused.value.response
        assert error["Error"]["Code"] == "RequestLimitExceeded"
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 503
        assert classify(refused.value) == ErrorKind.THROTTLED
        assert cloud.front.throttled == {"DescribeInstances": 1}
