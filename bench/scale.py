"""Scale figures (issues 3 and 15): 200 concurrent StartVM, then 200 concurrent StopVM, against a
rate-limited, slow fake EC2.

The cloud is tests/chaos/harness.py's: moto behind tests/fakes/ec2_front.py, which holds every
RunInstances answer back for the provisioning latency and enforces the API limit itself (a token bucket
of `--rate` requests/s, burst `--rate`, over all actions; excess answered with RequestLimitExceeded,
HTTP 503, as EC2 does). Pod VMs boot from their user data on loopback, so StartVM covers instance
and agent tunnel, as for the shim. A real `cloud-api-adaptor aws` process runs with
CLOUD_API_RATE_LIMIT=`--rate` and CLOUD_API_BURST=`--burst`, by default 2 under the cloud's bucket:
the time from the adaptor's limiter to the cloud varies by some 10-20 ms, so a client bucket as large
as the cloud's overdraws it now and then ("bucket needed" shows by how much; --burst 20 to see it).

The ideal bound is max(latency, pods / rate) for StartVM, and pods x 1 call / rate for StopVM (one
TerminateInstances each: TerminateInstances is not held back): no client can do better against that
limit. "adaptor CPU" is the adaptor process's user and system time during the phase.
Run: .venv/bin/python -m bench.scale [--pods 200] [--latency 2] [--rate 20] [--burst 18]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench.common import cpu_seconds
from protocols.ttrpc.status import TtrpcError
from shimdriver.driver import HypervisorClient, shim_annotations
from tests.adaptor_process import AdaptorProcess
from tests.chaos.harness import AwsCloud, aws_cloud
from tests.fakes.ec2_front import TokenBucket, burst_needed, latency

OWNER = "scale-bench"
TARGET_RATIO = 1.15


def breakdown(calls: Counter[str]) -> str:
    return ", ".join(f"{action} {n}" for action, n in calls.most_common())


async def concurrently(pods: list[str], call: Callable[[str], Awaitable[None]]) -> tuple[float, list[str]]:
    """Wall time of `call(sandbox)` for every pod at once, and the errors."""
    errors: list[str] = []

    async def one(sandbox: str) -> None:
        try:
            await call(sandbox)
        except (TtrpcError, OSError) as exc:
            errors.append(f"{sandbox[:12]}: {exc}")

    begin = time.monotonic()
    await asyncio.gather(*(one(sandbox) for sandbox in pods))
    return time.monotonic() - begin, errors


class Window:
    """The front's counters from now on: calls and API-limit errors by action, request arrivals."""

    def __init__(self, cloud: AwsCloud) -> None:
        self.cloud = cloud
        self._calls = Counter(cloud.front.calls)
        self._throttled = Counter(cloud.front.throttled)
        self._first = len(cloud.front.arrivals)

    @property
    def calls(self) -> Counter[str]:
        return self.cloud.front.calls - self._calls

    @property
    def throttled(self) -> int:
        return (self.cloud.front.throttled - self._throttled).total()

    @property
    def arrivals(self) -> list[float]:
        return self.cloud.front.arrivals[self._first :]


async def start_all(
    args: argparse.Namespace, cloud: AwsCloud, hypervisor: HypervisorClient, pods: list[str]
) -> bool:
    window = Window(cloud)
    wall, errors = await concurrently(pods, hypervisor.start_vm)
    ideal = max(args.latency, args.pods / args.rate)
    calls = window.calls
    print(
        f"{args.pods} concurrent StartVM; fake EC2: RunInstances answers after {args.latency:g} s, "
        f"API limit {args.rate:g} requests/s (burst {int(args.rate)}) enforced server-side; "
        f"adaptor CLOUD_API_RATE_LIMIT={args.rate:g} CLOUD_API_BURST={args.burst}"
    )
    print(f"wall time          : {wall:.2f} s")
    print(f"ideal bound        : {ideal:.2f} s = max({args.latency:g} s, {args.pods} / {args.rate:g} s)")
    print(f"ratio              : {wall / ideal:.3f} (target <= {TARGET_RATIO})")
    print(f"API-limit errors   : {window.throttled} (target 0)")
    needed = burst_needed(window.arrivals, args.rate)
    print(f"bucket needed      : {needed:.1f} requests at {args.rate:g}/s for the arrivals at the fake")
    print(f"API calls/StartVM  : {calls.total() / args.pods:.2f} ({calls.total()} calls: {breakdown(calls)})")
    print(f"StartVM failures   : {len(errors)}")
    for error in errors[:5]:
        print(f"  error: {error}")
    return not errors


async def stop_all(
    args: argparse.Namespace, cloud: AwsCloud, adaptor: AdaptorProcess, pods: list[str]
) -> bool:
    assert adaptor.process is not None
    window = Window(cloud)
    cpu = cpu_seconds(adaptor.process.pid)
    wall, errors = await concurrently(pods, adaptor.hypervisor.stop_vm)
    cpu = cpu_seconds(adaptor.process.pid) - cpu
    left = await cloud.owned_instances(OWNER)
    await cloud.fleet.settled()
    calls = window.calls
    ideal = args.pods / args.rate
    print(f"{args.pods} concurrent StopVM, same cloud and adaptor")
    print(f"wall time          : {wall:.2f} s")
    print(f"ideal bound        : {ideal:.2f} s = {args.pods} x 1 call / {args.rate:g} per s")
    print(f"ratio              : {wall / ideal:.3f} (target <= {TARGET_RATIO})")
    print(f"API-limit errors   : {window.throttled} (target 0)")
    needed = burst_needed(window.arrivals, args.rate)
    print(f"bucket needed      : {needed:.1f} requests at {args.rate:g}/s for the arrivals at the fake")
    print(f"API calls/StopVM   : {calls.total() / args.pods:.2f} ({calls.total()} calls: {breakdown(calls)})")
    print(f"adaptor CPU        : {cpu:.2f} s ({cpu / args.pods * 1000:.1f} ms per StopVM)")
    print(f"StopVM failures    : {len(errors)}")
    print(f"left in the cloud  : {len(left)} instances, {len(cloud.fleet.running)} pod VMs")
    for error in (errors + cloud.fleet.errors)[:5]:
        print(f"  error: {error}")
    return not (errors or left or cloud.fleet.running or cloud.fleet.errors)


async def run(args: argparse.Namespace, directory: Path) -> int:
    async with aws_cloud(
        directory / "cloud",
        hold=latency(lambda action: args.latency if action == "RunInstances" else 0.0),
        rate_limit=TokenBucket(args.rate, int(args.rate)),
    ) as cloud:
        env = cloud.adaptor_env(
            OWNER, CLOUD_API_RATE_LIMIT=str(args.rate), CLOUD_API_BURST=str(args.burst), PROXY_TIMEOUT="300s"
        )
        adaptor = AdaptorProcess(directory / "node", env)
        adaptor.directory.mkdir()
        await adaptor.start()
        try:
            hypervisor = adaptor.hypervisor
            pods = [secrets.token_hex(32) for _ in range(args.pods)]
            for index, sandbox in enumerate(pods):  # CreateVM makes no cloud call
                await hypervisor.create_vm(sandbox, shim_annotations(f"scale-{index}", "bench"))
            await asyncio.sleep(2.0)  # both token buckets full again after the adaptor's start-up calls
            started = await start_all(args, cloud, hypervisor, pods)
            await asyncio.sleep(2.0)  # full buckets again, as for StartVM
            stopped = await stop_all(args, cloud, adaptor, pods)
        finally:
            await adaptor.stop()
    return 0 if started and stopped else 1


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=200)
    parser.add_argument("--latency", type=float, default=2.0, help="RunInstances answer delay, seconds")
    parser.add_argument("--rate", type=float, default=20.0, help="API requests/s, fake and adaptor alike")
    parser.add_argument("--burst", type=int, default=18, help="the adaptor's CLOUD_API_BURST")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="pp-", dir="/tmp"))  # short: unix socket paths
    try:
        sys.exit(asyncio.run(run(args, directory)))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
