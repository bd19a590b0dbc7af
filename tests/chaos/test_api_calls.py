"""What one pod costs in EC2 API calls through a real adaptor: the scale figures rest on it.

At CLOUD_API_RATE_LIMIT calls/s, N pods take at best N x (calls per pod) / rate seconds. A StartVM is
one RunInstances (the adaptor lists its instances once at start-up, not per pod); a StopVM is one
TerminateInstances: the record knows the instance and that no public address was asked for.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from shimdriver.driver import shim_annotations
from tests.adaptor_process import AdaptorProcess
from tests.chaos.harness import aws_cloud

PODS = 3


async def test_a_pod_costs_one_call_to_start_and_one_to_stop(tmp_path: Path, moto_url: str) -> None:
    async with aws_cloud(tmp_path / "cloud", moto_url=moto_url) as cloud:
        adaptor = AdaptorProcess(tmp_path / "node", cloud.adaptor_env("api-calls"))
        adaptor.directory.mkdir()
        await adaptor.start()
        try:
            sandboxes = [f"api-{i}" for i in range(PODS)]
            for sandbox in sandboxes:
                await adaptor.hypervisor.create_vm(sandbox, shim_annotations(sandbox, "ns"))
            before = Counter(cloud.front.calls)
            await asyncio.gather(*(adaptor.hypervisor.start_vm(sandbox) for sandbox in sandboxes))
            started = Counter(cloud.front.calls)
            await asyncio.gather(*(adaptor.hypervisor.stop_vm(sandbox) for sandbox in sandboxes))
            stopped = Counter(cloud.front.calls)
        finally:
            await adaptor.stop()
        assert started - before == {"RunInstances": PODS}
        assert stopped - started == {"TerminateInstances": PODS}
        assert await cloud.owned_instances("api-calls") == {}
