"""A whole AWS cloud on loopback, and a real `cloud-api-adaptor aws` process to point at it.

The cloud is a moto server (own process) behind tests/fakes/ec2_front.py, whose launches boot fake
pod VMs (tests/chaos/fleet.py). Instances must get loopback addresses, since the adaptor dials each
pod VM at its private IP: the harness creates a VPC and subnet inside 127.0.0.0/8 and the adaptor
launches into that subnet (AWS_SUBNET_ID), so moto hands out addresses 127.N.0.4, 127.N.0.5, ... .
N is random per cloud, so that two runs on one machine do not share addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config

from providers.base import OWNER_TAG, SANDBOX_TAG
from tests.chaos.fleet import PodVMFleet, no_delay
from tests.chaos.moto_server import moto_server
from tests.fakes.ec2_front import Ec2Front, Hold, TokenBucket, no_hold

if TYPE_CHECKING:
    from mypy_boto3_ec2.client import EC2Client

REGION = "us-east-1"
INSTANCE_TYPE = "m6a.large"  # AMD SEV-SNP capable in moto's instance-type catalogue
LIVE_STATES = ["pending", "running", "stopping", "stopped"]
KEY = "testing"  # moto takes any credentials


def ec2_client(url: str, config: Config | None = None) -> EC2Client:
    return boto3.client(
        "ec2",
        region_name=REGION,
        endpoint_url=url,
        aws_access_key_id=KEY,
        aws_secret_access_key=KEY,
        config=config,
    )


def free_port() -> int:
    """A TCP port free on loopback; the pod VMs' forwarders all listen on it, each at its own address."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class AwsCloud:
    url: str  # the front: what the adaptor talks to
    front: Ec2Front
    fleet: PodVMFleet
    admin: EC2Client  # straight to moto: the test's own look, not counted by the front
    subnet_id: str
    image_id: str

    def adaptor_env(self, owner: str, **settings: str) -> dict[str, str]:
        """The adaptor's environment: this cloud's AWS settings, and none of the host's AWS setup."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(
            AWS_CONFIG_FILE="/nonexistent/aws-config",
            AWS_SHARED_CREDENTIALS_FILE="/nonexistent/aws-credentials",
            AWS_REGION=REGION,
            AWS_ENDPOINT_URL=self.url,
            AWS_ACCESS_KEY_ID=KEY,
            AWS_SECRET_ACCESS_KEY=KEY,
            PODVM_AMI_ID=self.image_id,
            PODVM_INSTANCE_TYPE=INSTANCE_TYPE,
            AWS_SUBNET_ID=self.subnet_id,
            FORWARDER_PORT=str(self.fleet.port),
            PEERPODS_OWNER=owner,
        )
        env.update(settings)
        return env

    async def owned_instances(self, owner: str) -> dict[str, str]:
        """Live instances tagged with `owner`: instance id -> sandbox id tag."""

        def describe() -> dict[str, str]:
            pages = self.admin.get_paginator("describe_instances").paginate(
                Filters=[
                    {"Name": f"tag:{OWNER_TAG}", "Values": [owner]},
                    {"Name": "instance-state-name", "Values": LIVE_STATES},
                ]
            )
            return {
                instance["InstanceId"]: next(
                    (t["Value"] for t in instance.get("Tags", []) if t["Key"] == SANDBOX_TAG), ""
                )
                for page in pages
                for reservation in page["Reservations"]
                for instance in reservation["Instances"]
            }

        return await asyncio.to_thread(describe)


def _loopback_network(admin: EC2Client, octet: int) -> tuple[str, str]:
    """A VPC 127.<octet>.0.0/16 with one subnet, and a UEFI pod VM image: (subnet id, image id)."""
    vpc = admin.create_vpc(CidrBlock=f"127.{octet}.0.0/16")["Vpc"]["VpcId"]
    subnet = admin.create_subnet(VpcId=vpc, CidrBlock=f"127.{octet}.0.0/18")["Subnet"]["SubnetId"]
    image = admin.register_image(Name="podvm", BootMode="uefi")["ImageId"]
    return subnet, image


@contextlib.asynccontextmanager
async def aws_cloud(
    directory: Path,
    *,
    moto_url: str | None = None,
    hold: Hold = no_hold,
    rate_limit: TokenBucket | None = None,
    boot_delay: Callable[[], float] = no_delay,
    boot_pod_vms: bool = True,
) -> AsyncIterator[AwsCloud]:
    """The cloud on `moto_url`, or on a moto server of its own (a fresh one, in its own process)."""
    directory.mkdir(parents=True, exist_ok=True)
    async with contextlib.AsyncExitStack() as stack:
        if moto_url is None:
            moto_url = stack.enter_context(moto_server(directory / "moto.log"))  # blocks a few seconds
        admin = ec2_client(moto_url)
        stack.callback(admin.close)
        octet = random.SystemRandom().randrange(64, 255)
        subnet_id, image_id = await asyncio.to_thread(_loopback_network, admin, octet)
        (directory / "fleet").mkdir(exist_ok=True)
        fleet = PodVMFleet(directory / "fleet", free_port(), boot_delay)
        await fleet.start()
        stack.push_async_callback(fleet.close)
        front = Ec2Front(moto_url, hold=hold, rate_limit=rate_limit, observer=fleet if boot_pod_vms else None)
        url = await front.start()
        stack.push_async_callback(front.close)
        yield AwsCloud(url, front, fleet, admin, subnet_id, image_id)
