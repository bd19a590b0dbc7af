"""Chaos: SIGKILL a real `cloud-api-adaptor aws` while 50 sandboxes start, and check nothing leaks or is lost.

Each round the "shim" starts 50 new sandboxes at once (CreateVM + StartVM on the hypervisor socket) and
deletes a quarter of the running pods (StopVM), and the adaptor is killed after a random delay. The
delays are drawn, one per round, from strata of the time a round takes, so that kills land before,
during and after RunInstances (answers are held back 0.1-1 s by the front while the instance already
exists) and tunnel setup (pod VMs boot 0-0.5 s after launch). Then the adaptor is restarted (in half
the rounds it is first killed once more while it validates or reconciles), its start-up
reconciliation runs, and the shim reacts as Kata does: a sandbox whose CreateVM or StartVM
failed is torn down with StopVM, a failed StopVM is retried; pods that started keep running.

After every round the cloud must hold exactly the instances of the running sandboxes: no owned
instance without a running sandbox (zero leaked), and every running sandbox's instance is there, is
the one it started on, and answers Health.Check through its agent socket (zero lost). The checks are
invariants, true whatever the timing; the kill phase of each round is only reported.

CHAOS_SEED picks another seed; the test prints the kill phases it hit (`pytest -s`).
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from adaptor.state import SandboxRecord, SandboxState, StateStore
from protocols.proto import podvminfo_pb2
from protocols.ttrpc.client import Client
from protocols.ttrpc.status import TtrpcError
from shimdriver.driver import AgentClient, HypervisorClient, shim_annotations
from tests.adaptor_process import AdaptorProcess
from tests.chaos.harness import AwsCloud, aws_cloud
from tests.fakes.ec2_front import latency

SEED = int(os.environ.get("CHAOS_SEED", "20261129"))
SANDBOXES_PER_ROUND = 50
ROUNDS = 6
ROUND_SPAN_S = 2.5  # about how long 50 starts take here; kill delays are spread over it
OWNER = "chaos-node"
NAMESPACE = "chaos"
SERVING = 1
SHIM_ERRORS = (TtrpcError, OSError)

pytestmark = pytest.mark.timeout(170)


@dataclass
class Pod:
    sandbox_id: str
    name: str
    socket: str = ""
    running: bool = False
    needs_stop: bool = False  # a failed start or stop: the shim tears it down once the adaptor is back
    instance_id: str = ""


class Shim:
    """What the Kata shim does with the hypervisor socket, one pod at a time."""

    def __init__(self, hypervisor: HypervisorClient) -> None:
        self.hypervisor = hypervisor

    async def start(self, pod: Pod) -> None:
        try:
            pod.socket = await self.hypervisor.create_vm(
                pod.sandbox_id, shim_annotations(pod.name, NAMESPACE)
            )
            await self.hypervisor.start_vm(pod.sandbox_id)
        except SHIM_ERRORS:
            pod.needs_stop = True
        else:
            pod.running = True

    async def stop(self, pod: Pod) -> None:
        pod.running = False
        try:
            await self.hypervisor.stop_vm(pod.sandbox_id)
        except SHIM_ERRORS:
            pod.needs_stop = True
        else:
            pod.needs_stop = False


async def instance_of(adaptor: AdaptorProcess, pod: Pod) -> str:
    """The pod's instance id, asked the way the peer-pods webhook does (PodVMInfo.GetInfo)."""
    async with await Client.connect_unix(adaptor.socket) as client:
        request = podvminfo_pb2.GetInfoRequest(PodName=pod.name, PodNamespace=NAMESPACE)
        response = await client.unary(
            "podvminfo.PodVMInfo", "GetInfo", request, podvminfo_pb2.GetInfoResponse, timeout=30
        )
        return response.VMID


async def health(pod: Pod) -> int:
    agent = await AgentClient.dial(pod.socket, timeout=30)
    try:
        return await agent.check()
    finally:
        await agent.close()


def records_of(adaptor: AdaptorProcess) -> dict[str, SandboxRecord]:
    """The adaptor's sandbox records, read from its database (WAL: readable while it runs)."""
    store = StateStore(adaptor.state_dir / "sandboxes.db")
    try:
        return {record.id: record for record in store.all()}
    finally:
        store.close()


def kill_phase(records: dict[str, SandboxRecord], launched: set[str], pods: list[Pod]) -> str:
    """Where this round's sandboxes were when the adaptor died, for the report."""
    counts: Counter[str] = Counter()
    for pod in pods:
        record = records.get(pod.sandbox_id)
        if record is None:
            counts["before CreateVM"] += 1
        elif record.state != SandboxState.STARTING:
            counts[record.state.value] += 1
        elif record.instance_id:
            counts["tunnel setup"] += 1
        elif pod.sandbox_id in launched:
            counts["RunInstances unanswered"] += 1
        else:
            counts["before RunInstances"] += 1
    return ", ".join(f"{name} {n}" for name, n in sorted(counts.items()))


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[tuple[AwsCloud, Path]]:
    """The cloud, and a short scratch directory for the node (unix socket paths must stay short).

    The adaptor's log is kept in `tmp_path`.
    """
    directory = Path(tempfile.mkdtemp(prefix="pp-", dir="/tmp"))
    rng = random.Random(SEED + 1)
    try:
        async with aws_cloud(
            directory / "cloud",
            hold=latency(lambda action: rng.uniform(0.1, 1.0) if action == "RunInstances" else 0.0),
            boot_delay=lambda: rng.uniform(0.0, 0.5),
        ) as aws:
            yield aws, directory
    finally:
        if (directory / "node" / "adaptor.log").exists():
            shutil.copy(directory / "node" / "adaptor.log", tmp_path)
        shutil.rmtree(directory, ignore_errors=True)


async def check_invariant(adaptor: AdaptorProcess, cloud: AwsCloud, pods: list[Pod]) -> None:
    live = [pod for pod in pods if pod.running]
    instances = await cloud.owned_instances(OWNER)
    for pod in live:
        instance_id = await instance_of(adaptor, pod)
        assert not pod.instance_id or pod.instance_id == instance_id, f"{pod.name} moved to another VM"
        pod.instance_id = instance_id
    expected = {pod.instance_id: pod.sandbox_id for pod in live}
    leaked = {i: s for i, s in instances.items() if i not in expected}
    lost = {i: s for i, s in expected.items() if i not in instances}
    assert (leaked, lost) == ({}, {}), f"leaked {leaked}, lost {lost}"
    assert instances == expected, "an instance carries the wrong sandbox tag"

    states = {sandbox_id: record.state for sandbox_id, record in records_of(adaptor).items()}
    assert states == {pod.sandbox_id: SandboxState.RUNNING for pod in live}

    statuses = await asyncio.gather(*(health(pod) for pod in live))
    assert statuses == [SERVING] * len(live)
    await cloud.fleet.settled()
    assert cloud.fleet.errors == []
    assert cloud.fleet.running == set(instances), "a pod VM outlived its instance or never booted"


async def test_sigkill_during_concurrent_starts_leaks_and_loses_nothing(
    cloud: tuple[AwsCloud, Path],
) -> None:
    aws, directory = cloud
    rng = random.Random(SEED)
    adaptor = AdaptorProcess(
        directory / "node",
        aws.adaptor_env(OWNER, CLOUD_API_RATE_LIMIT="80", CLOUD_API_BURST="10", PROXY_TIMEOUT="60s"),
    )
    adaptor.directory.mkdir()
    shim = Shim(adaptor.hypervisor)
    step = ROUND_SPAN_S / ROUNDS
    delays = [rng.uniform(i * step, (i + 1) * step) for i in range(ROUNDS)]
    rng.shuffle(delays)
    pods: list[Pod] = []
    report = [f"seed {SEED}"]
    await adaptor.start()
    try:
        for round_number, delay in enumerate(delays):
            new = [
                Pod(rng.randbytes(32).hex(), f"pod-{round_number}-{i}") for i in range(SANDBOXES_PER_ROUND)
            ]
            running = [pod for pod in pods if pod.running]
            deleted = rng.sample(running, len(running) // 4)
            pods += new
            shim_work = asyncio.gather(*(shim.start(p) for p in new), *(shim.stop(p) for p in deleted))
            await asyncio.sleep(delay)
            await adaptor.kill()
            async with asyncio.timeout(60):
                await shim_work

            launched = set((await aws.owned_instances(OWNER)).values())
            phase = kill_phase(records_of(adaptor), launched, new)

            began = time.monotonic()
            if rng.random() < 0.5:  # kill it again while it validates or reconciles
                await adaptor.spawn()
                again = rng.uniform(0.2, 1.5)
                await asyncio.sleep(again)
                await adaptor.kill()
                phase += f"; killed again {again:.2f}s into the restart"
            await adaptor.start()
            restarted = time.monotonic()
            torn_down = [pod for pod in pods if pod.needs_stop]
            await asyncio.gather(*(shim.stop(pod) for pod in torn_down))
            assert [pod.name for pod in torn_down if pod.needs_stop] == []
            reacted = time.monotonic()
            await check_invariant(adaptor, aws, pods)
            report.append(
                f"round {round_number}: kill at {delay:.2f}s: {phase}; restart {restarted - began:.1f}s, "
                f"{len(torn_down)} StopVM {reacted - restarted:.1f}s, "
                f"{sum(p.running for p in pods)} live checked {time.monotonic() - reacted:.1f}s"
            )

        began = time.monotonic()
        await asyncio.gather(*(shim.stop(pod) for pod in pods if pod.running))
        report.append(f"final StopVM of the live pods {time.monotonic() - began:.1f}s")
        assert await aws.owned_instances(OWNER) == {}
        await check_invariant(adaptor, aws, pods)
    finally:
        print("\n".join(report))
        await adaptor.stop()
