"""Many shims dialling the hypervisor socket at once all get through, even while the adaptor is busy.

Each Kata shim opens a connection per hypervisor call; when 200 pods start or stop together, 200
connections arrive while the adaptor's event loop is busy. asyncio listens with a backlog of 100, and an
AF_UNIX connect beyond a full backlog fails (Go's shim gets EAGAIN; asyncio clients see the connection
drop with EINVAL), so StartVM and StopVM failed in bench/scale.py. Go servers listen with SOMAXCONN.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from tests.adaptor_process import AdaptorProcess
from tests.chaos.harness import aws_cloud

SHIMS = 200


async def test_a_burst_of_shim_connections_is_served(tmp_path: Path, moto_url: str) -> None:
    async with aws_cloud(tmp_path / "cloud", moto_url=moto_url, boot_pod_vms=False) as cloud:
        adaptor = AdaptorProcess(tmp_path / "node", cloud.adaptor_env("backlog"))
        adaptor.directory.mkdir()
        await adaptor.start()
        assert adaptor.process is not None
        try:
            adaptor.process.send_signal(signal.SIGSTOP)  # busy: it accepts nothing for a moment
            calls = [asyncio.ensure_future(adaptor.hypervisor.version()) for _ in range(SHIMS)]
            await asyncio.sleep(0.5)
        finally:
            adaptor.process.send_signal(signal.SIGCONT)
        try:
            results = await asyncio.gather(*calls, return_exceptions=True)
        finally:
            await adaptor.stop()
        failures = [str(result) for result in results if isinstance(result, BaseException)]
        assert failures == []
