"""The adaptor's /startup, /healthz and /metrics and its JSON log lines, from real adaptor processes.

The AWS tests run `cloud-api-adaptor aws` against moto behind the EC2 front (tests/chaos), which can
hold an action's answers (start-up stays in progress as long as the test wants) and throttle a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from adaptor.observability import HOST
from shimdriver.driver import run_pod, shim_annotations
from tests.adaptor.conftest import LocalAdaptor, free_port
from tests.adaptor_process import AdaptorProcess
from tests.chaos.harness import AwsCloud, aws_cloud
from tests.chaos.moto_server import moto_server
from tests.fakes.ec2_front import THROTTLE_CODE, THROTTLE_MESSAGE, error_body

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as url:
        yield url


async def answer(
    http: aiohttp.ClientSession, url: str, adaptor: AdaptorProcess, timeout_s: float = 60.0
) -> tuple[int, str]:
    """The first answer from `url`, once the adaptor listens there."""
    assert adaptor.process is not None
    async with asyncio.timeout(timeout_s):
        while True:
            if adaptor.process.returncode is not None:
                raise AssertionError(f"adaptor exited:\n{adaptor.log.read_text()[-4000:]}")
            try:
                async with http.get(url) as response:
                    return response.status, await response.text()
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)


async def until_status(
    http: aiohttp.ClientSession, url: str, adaptor: AdaptorProcess, status: int, timeout_s: float = 60.0
) -> None:
    async with asyncio.timeout(timeout_s):
        while (await answer(http, url, adaptor))[0] != status:
            await asyncio.sleep(0.05)


async def scrape(http: aiohttp.ClientSession, port: int, adaptor: AdaptorProcess) -> Samples:
    status, text = await answer(http, f"http://{HOST}:{port}/metrics", adaptor)
    assert status == 200, text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@contextlib.asynccontextmanager
async def aws_adaptor(
    cloud: AwsCloud, directory: Path, owner: str, port: int
) -> AsyncIterator[AdaptorProcess]:
    directory.mkdir()
    adaptor = AdaptorProcess(directory, cloud.adaptor_env(owner), args=("--probe-port", str(port)))
    await adaptor.spawn()
    try:
        yield adaptor
    finally:
        await adaptor.stop()


async def test_startup_is_503_until_the_cloud_is_checked_and_reconciled(
    tmp_path: Path, short_dir: Path, moto_url: str
) -> None:
    released = asyncio.Event()

    async def hold(action: str) -> None:
        if action == "DescribeInstances":  # start-up's validation and reconciliation both list instances
            await released.wait()

    port = free_port()
    base = f"http://{HOST}:{port}"
    async with (
        aws_cloud(tmp_path / "cloud", moto_url=moto_url, hold=hold) as cloud,
        aws_adaptor(cloud, short_dir / "node", "obs-startup", port) as adaptor,
        aiohttp.ClientSession() as http,
    ):
        try:
            assert await answer(http, f"{base}/startup", adaptor) == (
                503,
                "starting: reconciling sandboxes with the cloud\n",
            )
            assert (await answer(http, f"{base}/healthz", adaptor))[0] == 200
            assert not adaptor.socket.exists()
        finally:
            released.set()
        await until_status(http, f"{base}/startup", adaptor, 200)
        async with http.post(f"{base}/startup") as response:
            assert response.status == 405


async def test_metrics_count_start_stop_and_a_throttled_cloud_call(
    tmp_path: Path, short_dir: Path, moto_url: str
) -> None:
    port = free_port()
    sandbox = secrets.token_hex(32)
    async with (
        aws_cloud(tmp_path / "cloud", moto_url=moto_url) as cloud,
        aws_adaptor(cloud, short_dir / "node", "obs-metrics", port) as adaptor,
        aiohttp.ClientSession() as http,
    ):
        await adaptor.serving(60)
        await adaptor.hypervisor.create_vm(sandbox, shim_annotations("web", "shop"))
        assert value(await scrape(http, port, adaptor), "peerpods_sandboxes", state="created") == 1
        cloud.front.fail("RunInstances", 503, error_body(THROTTLE_CODE, THROTTLE_MESSAGE))
        await adaptor.hypervisor.start_vm(sandbox)
        running = await scrape(http, port, adaptor)
        await adaptor.hypervisor.stop_vm(sandbox)
        stopped = await scrape(http, port, adaptor)

    aws_run = {"provider": "aws", "operation": "run_instances"}
    assert value(running, "peerpods_sandboxes", state="running") == 1
    assert value(running, "peerpods_sandboxes", state="created") == 0
    assert value(running, "peerpods_start_vm_duration_seconds_count", code="OK") == 1
    assert value(running, "peerpods_cloud_api_calls_total", **aws_run) == 2, (
        "the throttled call and its retry"
    )
    assert value(running, "peerpods_cloud_api_throttles_total", **aws_run) == 1
    assert value(running, "peerpods_cloud_api_errors_total", **aws_run, code=THROTTLE_CODE) == 1
    assert (
        value(running, "peerpods_cloud_api_calls_total", provider="aws", operation="describe_instances") >= 1
    )
    assert value(stopped, "peerpods_stop_vm_duration_seconds_count", code="OK") == 1
    assert value(stopped, "peerpods_sandboxes", state="running") == 0
    assert value(stopped, "peerpods_tunnel_redials_total") == 0


async def test_json_log_lines_carry_the_sandbox_and_its_pod(short_dir: Path) -> None:
    sandbox = secrets.token_hex(32)
    adaptor = LocalAdaptor(short_dir)
    adaptor.args = (*adaptor.args, "-v", "--log-format", "json")
    await adaptor.start()
    try:
        result = await run_pod(adaptor.hypervisor, sandbox, ["true"], pod_name="web", namespace="shop")
    finally:
        await adaptor.stop()
    assert result.exit_status == 0
    lines = [json.loads(line) for line in adaptor.log.read_text().splitlines()]
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    about = [line for line in lines if sandbox in line["message"]]
    assert len(about) >= 3, lines  # created, instance, stopped at least
    for line in about:
        assert (line["sandbox_id"], line["pod_name"], line["pod_namespace"]) == (sandbox, "web", "shop"), line
    assert {line["level"] for line in lines} <= {"debug", "info", "warning", "error", "critical"}


async def test_probe_port_taken_or_bad_log_format_stop_the_start(short_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        for args, expected in [
            (["--probe-port", str(port)], f"PROBE_PORT: cannot listen on {HOST}:{port}"),
            (["--log-format", "yaml"], "'yaml' is not one of text, json (LOG_FORMAT)"),
        ]:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-c", "from adaptor.cli import main; main()", "local",
                "--state-dir", str(short_dir / "state"), "--socket", str(short_dir / "hv.sock"),
                "--local-dir", str(short_dir / "vms"), *args,
                stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            _, stderr = await process.communicate()
            assert process.returncode == 2, stderr
            assert expected in stderr.decode() and b"Traceback" not in stderr
