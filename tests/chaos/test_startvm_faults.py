"""A cloud that rejects the request: StartVM fails with the cloud's own reason, and nothing is left."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocols.ttrpc.status import Code, TtrpcError
from shimdriver.driver import shim_annotations
from tests.adaptor_process import AdaptorProcess
from tests.chaos.harness import aws_cloud


@pytest.mark.parametrize(
    ("case", "settings", "image", "reason"),
    [
        ("bad-subnet", {"AWS_SUBNET_ID": "subnet-0bad0bad0bad0bad0"}, "", "InvalidSubnetID.NotFound"),
        ("bad-ami", {}, "ami-0bad0bad0bad0bad0", "ami-0bad0bad0bad0bad0"),
    ],
)
async def test_rejected_start_reports_the_cloud_reason_and_leaves_nothing(
    tmp_path: Path, moto_url: str, case: str, settings: dict[str, str], image: str, reason: str
) -> None:
    async with aws_cloud(tmp_path / "cloud", moto_url=moto_url, boot_pod_vms=False) as cloud:
        adaptor = AdaptorProcess(tmp_path / "node", cloud.adaptor_env(case, **settings))
        adaptor.directory.mkdir()
        await adaptor.start()
        try:
            await adaptor.hypervisor.create_vm(case, shim_annotations("pod", "ns", image=image))
            with pytest.raises(TtrpcError) as info:
                await adaptor.hypervisor.start_vm(case)
            await adaptor.hypervisor.stop_vm(case)  # what the shim does after a failed start
        finally:
            await adaptor.stop()
        assert info.value.code == Code.INVALID_ARGUMENT
        assert reason in info.value.message, info.value.message
        assert await cloud.owned_instances(case) == {}
        assert not list((adaptor.directory / "pods").glob("*/agent.ttrpc"))
