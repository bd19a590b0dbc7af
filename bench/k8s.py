"""Kubernetes figures (issue 10): webhook admission latency and orphan clean-up by the controller.

Both run against the real control plane of tests/k8s (etcd, kube-apiserver, garbage collector).

- webhook: 200 kata-remote pods created at once through the API server, with peerpods-webhook
  registered (HTTPS, HTTP/2) and without it, alternately in one run; the p50/p99 of each create and
  their difference, the latency the webhook adds; the CPU each process spends per pod on each side
  (where the added latency comes from on a machine whose cores the burst saturates).
- controller: 500 PeerPods whose instances (moto, behind the EC2 front enforcing `--rate`
  requests/s) nobody released; their pods are deleted and peerpods-controller, with
  CLOUD_API_RATE_LIMIT=`--rate`, deletes the instances. The bound is the cloud calls made divided by
  the rate: no client can do better against that limit.

Run: .venv/bin/python -m bench.k8s [--pods 200] [--rounds 2] [--webhook-workers 1] [--pass-through]
                                   [--orphans 500] [--rate 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import aiohttp
import h2.config
import h2.connection
import h2.events

from cluster import peerpod
from cluster.controller.clouds import Clouds
from cluster.controller.reconcile import PeerPodController
from cluster.kubeapi import Json, KubeClient, KubeConfig
from cluster.webhook.h2 import H2Protocol
from cluster.webhook.mutate import MutationSettings
from cluster.webhook.server import MAX_REVIEW_BYTES, http2_handler
from providers.base import OWNER_TAG
from tests.chaos.harness import AwsCloud, aws_cloud
from tests.chaos.moto_server import moto_server
from tests.fakes.ec2_front import TokenBucket
from tests.k8s.cluster import ControlPlane, control_plane, free_port
from tests.k8s.conftest import CRD_FILE
from tests.k8s.test_webhook_cluster import HOOKS, ensure_runtime_class, pod, registration

TARGET_ADDED_P99_MS = 50.0
TARGET_RATIO = 1.15
OWNER = "k8s-bench"
RESOURCES = {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}}


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def create_all(kube: KubeClient, namespace: str, pods: list[Json]) -> list[float]:
    async def one(body: Json) -> float:
        begin = time.perf_counter()
        await kube.create(f"/api/v1/namespaces/{namespace}/pods", body)
        return (time.perf_counter() - begin) * 1000

    return list(await asyncio.gather(*(one(body) for body in pods)))


async def namespace_named(kube: KubeClient, name: str) -> str:
    await kube.create(
        "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    return name


@contextlib.asynccontextmanager
async def webhook_process(
    certs: Path, directory: Path, workers: int, pass_through: bool
) -> AsyncIterator[tuple[int, int]]:
    """`peerpods-webhook` in a process of its own, as deployed (not sharing the load generator's loop);
    yields (its pid, its port). `pass_through`: its target runtime class is one no pod has, so it
    allows every pod unchanged (what calling a webhook costs, without a mutation)."""
    env = {**os.environ, "TARGET_RUNTIMECLASS": "bench-no-such-class"} if pass_through else None
    port, probe = free_port(), free_port()
    binary = Path(sys.executable).with_name("peerpods-webhook")
    with (directory / "webhook.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            str(binary), "--cert-dir", str(certs), f"--webhook-bind-address=127.0.0.1:{port}",
            f"--health-probe-bind-address=127.0.0.1:{probe}", f"--workers={workers}", stderr=log, env=env,
        )  # fmt: skip
    try:
        async with asyncio.timeout(30), aiohttp.ClientSession() as http:
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"http://127.0.0.1:{probe}/healthz") as reply:
                        if reply.status == 200:
                            break
                await asyncio.sleep(0.1)
        yield process.pid, port
    finally:
        process.terminate()
        await process.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and of its live children (the webhook's workers)."""
    ticks = os.sysconf("SC_CLK_TCK")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / ticks
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return own + sum(cpu_seconds(int(child)) for child in children)


@dataclass
class Side:
    """The creates of one side (webhook registered or not) and the CPU each process spent on them."""

    latencies: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    pods: int = 0

    def per_pod_ms(self, name: str) -> float:
        return self.cpu.get(name, 0.0) * 1000 / self.pods


async def measured_round(kube: KubeClient, namespace: str, bodies: list[Json], pids: dict[str, int],
                         side: Side) -> None:  # fmt: skip
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    generator = time.process_time()
    side.latencies += await create_all(kube, namespace, bodies)
    for name, pid in pids.items():
        side.cpu[name] = side.cpu.get(name, 0.0) + cpu_seconds(pid) - before[name]
    side.cpu["load generator"] = side.cpu.get("load generator", 0.0) + time.process_time() - generator
    side.pods += len(bodies)


async def webhook_calls(kube: KubeClient) -> float:
    buckets = await webhook_call_buckets(kube)
    return buckets[-1][1] if buckets else 0.0


async def wait_called(kube: KubeClient, namespace: str, called: bool) -> None:
    """Until a dry-run create does (or no longer does) reach the webhook: the API server learns of a
    registration or its deletion asynchronously. Counted on its metrics, so that a webhook that
    changes nothing (--pass-through) is seen too."""
    probe = pod("probe", "kata-remote")
    async with asyncio.timeout(30):
        while True:
            before = await webhook_calls(kube)
            await kube.request(
                "POST", f"/api/v1/namespaces/{namespace}/pods", probe, params={"dryRun": "All"}
            )
            if (await webhook_calls(kube) > before) == called:
                return
            await asyncio.sleep(0.05)


async def webhook_bench(args: argparse.Namespace, kube: KubeClient, directory: Path, plane: ControlPlane,
                        certs: Path) -> bool:  # fmt: skip
    """The same kata-remote pods created with the webhook registered and without it, in the same run."""
    namespace = await namespace_named(kube, "bench-webhook")
    sides = {False: Side(), True: Side()}
    load_before = os.getloadavg()
    webhook = webhook_process(certs, directory, args.webhook_workers, args.pass_through)
    async with webhook as (webhook_pid, port):
        pids = {"kube-apiserver": plane.processes[1].pid, "etcd": plane.processes[0].pid,
                "peerpods-webhook": webhook_pid}  # fmt: skip
        await ensure_runtime_class(kube)
        hook = registration("bench", f"https://127.0.0.1:{port}/mutate-v1-pod", plane.ca.pem, namespace)
        registered = False
        # ABBA order: a drift of the machine's load over the run weighs on both sides alike.
        for round_, with_webhook in enumerate((False, True, True, False) * args.rounds):
            if with_webhook and not registered:
                await kube.create(HOOKS, hook)
                await wait_called(kube, namespace, True)
                await create_all(kube, namespace, [pod(f"w{round_}-{i}", "kata-remote", RESOURCES)
                                                   for i in range(20)])  # fmt: skip  # connections up
            elif registered and not with_webhook:
                await kube.delete(f"{HOOKS}/bench")
                await wait_called(kube, namespace, False)
            registered = with_webhook
            bodies = [pod(f"r{round_}-{i}", "kata-remote", RESOURCES) for i in range(args.pods)]
            await measured_round(kube, namespace, bodies, pids, sides[with_webhook])
    seen_by_server = await webhook_call_buckets(kube)
    plain, mutated = sides[False].latencies, sides[True].latencies
    added_p50 = statistics.median(mutated) - statistics.median(plain)
    added_p99 = percentile(mutated, 0.99) - percentile(plain, 0.99)
    print(f"webhook: {args.pods} kata-remote pods created at once through the API server, "
          f"{2 * args.rounds} rounds each way (ABBA), webhook with {args.webhook_workers} worker(s)"
          f"{', passing every pod unchanged' if args.pass_through else ''}; "
          f"load average {load_before[0]:.1f} -> {os.getloadavg()[0]:.1f}")  # fmt: skip
    for label, samples in (("webhook not registered", plain), ("webhook registered    ", mutated)):
        p50, p99 = statistics.median(samples), percentile(samples, 0.99)
        print(f"  create, {label} : p50 {p50:7.1f} ms  p99 {p99:7.1f} ms")
    print(f"  added by the webhook          : p50 {added_p50:7.1f} ms  p99 {added_p99:7.1f} ms "
          f"(target p99 <= {TARGET_ADDED_P99_MS:g})")  # fmt: skip
    print("  CPU per pod created (ms)      :   without     with    added")
    added_cpu = 0.0
    for name in (*pids, "load generator"):
        without, with_ = sides[False].per_pod_ms(name), sides[True].per_pod_ms(name)
        added_cpu += with_ - without
        print(f"    {name:27}: {without:8.2f} {with_:8.2f} {with_ - without:8.2f}")
    cores = len(os.sched_getaffinity(0))
    burst = added_cpu * args.pods
    print(f"  CPU added per burst           : {burst:.0f} ms, i.e. {burst / cores:.0f} ms of wall time "
          f"on {cores} cores when the burst saturates them")  # fmt: skip
    calls = seen_by_server[-1][1] if seen_by_server else 0
    p50_bound = next((le for le, n in seen_by_server if n >= 0.5 * calls), "?")
    p99_bound = next((le for le, n in seen_by_server if n >= 0.99 * calls), "?")
    print(f"  webhook calls as the API server times them : {calls:.0f} calls, p50 <= {p50_bound} s, "
          f"p99 <= {p99_bound} s (its histogram buckets)")  # fmt: skip
    return added_p99 <= TARGET_ADDED_P99_MS


async def webhook_call_buckets(kube: KubeClient) -> list[tuple[str, float]]:
    """The API server's histogram of its calls to the webhook: (bucket bound, cumulative count):
    the time of each call as the API server sees it, queueing in its client included."""
    text = await kube.request_text("/metrics")
    buckets = []
    for line in text.splitlines():
        if (line.startswith("apiserver_admission_webhook_admission_duration_seconds_bucket{")
                and 'name="mwebhook.peerpods.io"' in line and 'operation="CREATE"' in line):  # fmt: skip
            labels, count = line.rsplit(" ", 1)
            bound = labels.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((bound, float(count)))
    return buckets


class _Sink:
    """The transport of the in-process figure: keeps what the server writes."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return False

    def take(self) -> bytes:
        data, self.written = b"".join(self.written), []
        return data


def framing_bench(args: argparse.Namespace) -> None:
    """The webhook's CPU per admission without TLS, sockets or API server: bursts of requests (an
    h2 client's bytes, as the API server's) fed to the server's protocol object."""
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
              "request": {"uid": "705ab4f5-6393-11e8-b7cc-42010a800002", "operation": "CREATE",
                          "object": pod("p", "kata-remote", RESOURCES)}}  # fmt: skip
    body = json.dumps(review).encode()
    server = H2Protocol(http2_handler(MutationSettings()), MAX_REVIEW_BYTES)
    sink = _Sink()
    server.connection_made(cast(asyncio.Transport, sink))
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    client.increment_flow_control_window(1 << 30)
    client.receive_data(sink.take())
    server.data_received(client.data_to_send())
    client.receive_data(sink.take())
    headers = [(":method", "POST"), (":path", "/mutate-v1-pod?timeout=10s"), (":scheme", "https"),
               (":authority", "127.0.0.1"), ("content-type", "application/json")]  # fmt: skip
    answered, cpu = 0, 0.0
    for _ in range(10):
        burst = []
        for _ in range(args.pods):
            stream = client.get_next_available_stream_id()
            client.send_headers(stream, [*headers, ("content-length", str(len(body)))])
            client.send_data(stream, body, end_stream=True)
            burst.append(client.data_to_send())
        begin = time.process_time()
        for data in burst:
            server.data_received(data)
        cpu += time.process_time() - begin
        for event in client.receive_data(sink.take()):
            if isinstance(event, h2.events.StreamEnded):
                answered += 1
            elif isinstance(event, h2.events.DataReceived):
                client.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
    print(f"webhook in-process: {answered} reviews ({len(body)} bytes) in bursts of {args.pods} over HTTP/2, "
          f"no TLS: {cpu / answered * 1e6:.0f} us of CPU per admission")  # fmt: skip


def _launch(cloud: AwsCloud, count: int) -> list[str]:
    """Instances made straight in moto (not through the rate-limited front), tagged as the adaptor's."""
    ids: list[str] = []
    while len(ids) < count:
        batch = min(100, count - len(ids))
        answer = cloud.admin.run_instances(
            ImageId=cloud.image_id, InstanceType="m6a.large", MinCount=batch, MaxCount=batch,
            SubnetId=cloud.subnet_id,
            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": OWNER_TAG, "Value": OWNER}]}],
        )  # fmt: skip
        ids += [instance["InstanceId"] for instance in answer["Instances"]]
    return ids


async def controller_bench(
    args: argparse.Namespace, kube: KubeClient, directory: Path, moto_url: str
) -> bool:
    namespace = await namespace_named(kube, "bench-controller")
    rate = TokenBucket(args.rate, int(args.rate))
    async with aws_cloud(
        directory / "cloud", moto_url=moto_url, rate_limit=rate, boot_pod_vms=False
    ) as cloud:
        ids = await asyncio.to_thread(_launch, cloud, args.orphans)
        semaphore = asyncio.Semaphore(32)

        async def orphan(index: int, instance_id: str) -> str:
            async with semaphore:
                name = f"pod-{index}"
                body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                        "spec": {"containers": [{"name": "app", "image": "busybox"}]}}  # fmt: skip
                created = await kube.create(f"/api/v1/namespaces/{namespace}/pods", body)
                record = peerpod.new_peerpod(
                    created, peerpod.peerpod_name(name, f"sb-{index}"), instance_id, "aws"
                )
                await kube.create(peerpod.collection(namespace), record)
                return name

        names = await asyncio.gather(*(orphan(i, instance_id) for i, instance_id in enumerate(ids)))
        env = cloud.adaptor_env(
            OWNER, CLOUD_API_RATE_LIMIT=str(args.rate), CLOUD_API_BURST=str(int(args.rate) - 2)
        )
        controller = PeerPodController(kube, Clouds(env), workers=args.workers)
        task = asyncio.create_task(controller.run())
        await controller.synced.wait()
        calls_before = cloud.front.calls.total()
        begin = time.monotonic()
        options = {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0}

        async def delete(name: str) -> None:
            async with semaphore:
                await kube.delete(f"/api/v1/namespaces/{namespace}/pods/{name}", options)

        await asyncio.gather(*(delete(name) for name in names))
        while (await kube.list(peerpod.collection(namespace), {"limit": "1"}))["items"]:
            await asyncio.sleep(0.2)
        wall = time.monotonic() - begin
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await controller.clouds.close()
        calls = cloud.front.calls.total() - calls_before
        left = await cloud.owned_instances(OWNER)
    bound = calls / args.rate
    print(f"controller: {args.orphans} orphaned PeerPods, cloud limit {args.rate:g} requests/s, "
          f"CLOUD_API_RATE_LIMIT={args.rate:g}, {args.workers} workers")  # fmt: skip
    print(f"  wall time (pods deleted -> last PeerPod gone) : {wall:.2f} s")
    print(
        f"  cloud calls                                   : {calls} ({calls / args.orphans:.2f} per instance)"
    )
    print(f"  rate-limit bound (calls / rate)               : {bound:.2f} s")
    print(f"  ratio                                         : {wall / bound:.3f} (target <= {TARGET_RATIO})")
    print(f"  API-limit errors at the cloud                 : {cloud.front.throttled.total()}")
    print(f"  instances left                                : {len(left)}")
    return wall / bound <= TARGET_RATIO and not left


async def run(args: argparse.Namespace, directory: Path) -> int:
    with (
        control_plane(directory / "k8s", [CRD_FILE]) as plane,
        moto_server(directory / "moto.log") as moto_url,
    ):
        certs = plane.ca.write_pair(directory / "certs", "peer-pods-webhook", ["127.0.0.1"])
        async with KubeClient(KubeConfig.from_file(plane.kubeconfig)) as kube:
            ok = True
            if not args.skip_webhook:
                framing_bench(args)
                ok &= await webhook_bench(args, kube, directory, plane, certs)
            if not args.skip_controller:
                ok &= await controller_bench(args, kube, directory, moto_url)
    return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=200)
    parser.add_argument("--orphans", type=int, default=500)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=32, help="controller workers")
    parser.add_argument("--webhook-workers", type=int, default=1, help="peerpods-webhook --workers")
    parser.add_argument("--rounds", type=int, default=2, help="ABBA rounds of the webhook bench")
    parser.add_argument("--pass-through", action="store_true", help="the webhook allows every pod unchanged")
    parser.add_argument("--skip-webhook", action="store_true")
    parser.add_argument("--skip-controller", action="store_true")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="pp-bench-k8s-", dir="/tmp"))
    try:
        sys.exit(asyncio.run(run(args, directory)))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
