"""The AWS provider keeps as many EC2 calls in flight as its rate limit calls for.

A blocking boto3 call holds one of the provider's worker threads until EC2 answers, so R calls/s that
take L s each need R x L threads; with fewer, the pool and not CLOUD_API_RATE_LIMIT caps the rate.
bench/scale.py's case, 20 RunInstances/s answered after 2 s, needs 40: here the fake cloud holds every
RunInstances answer until 64 are waiting, which only a large enough pool reaches.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from providers.aws import PLUGIN
from providers.base import CreateRequest
from providers.settings import resolve
from tests.chaos.harness import aws_cloud

IN_FLIGHT = 64
BARRIER_TIMEOUT_S = 30.0


async def test_provider_keeps_64_run_instances_in_flight(tmp_path: Path, moto_url: str) -> None:
    waiting = 0
    everyone_here = asyncio.Event()

    async def barrier(action: str) -> None:
        nonlocal waiting
        if action != "RunInstances":
            return
        waiting += 1
        if waiting >= IN_FLIGHT:
            everyone_here.set()
        # Never reached: let the calls finish, the assertions below say why.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(everyone_here.wait(), BARRIER_TIMEOUT_S)

    async with aws_cloud(tmp_path / "cloud", moto_url=moto_url, hold=barrier, boot_pod_vms=False) as cloud:
        env = cloud.adaptor_env("in-flight", CLOUD_API_RATE_LIMIT="1000", CLOUD_API_BURST="1000")
        provider = PLUGIN.create(resolve(PLUGIN.settings, None, env), "in-flight")
        try:
            await provider.validate()
            requests = [
                CreateRequest(f"podvm-p{i}-{i:08d}", f"sandbox-{i}", b"#cloud-config\n")
                for i in range(IN_FLIGHT)
            ]
            instances = await asyncio.gather(*(provider.create_instance(r) for r in requests))
        finally:
            await provider.teardown()
        assert cloud.front.peak_in_flight["RunInstances"] == IN_FLIGHT
        assert everyone_here.is_set()
        assert len({instance.id for instance in instances}) == IN_FLIGHT
