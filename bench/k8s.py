"""Kubernetes figures (issue 10): webhook admission latency and orphan clean-up by the controller.

Both run against the real control plane of tests/k8s (etcd, kube-apiserver, garbage collector).

- webhook: 200 pods created at once through the API server, once of another runtime class (not
  sent to the webhook: its matchConditions) and once of kata-remote (mutated by peerpods-webhook
  over HTTPS); the p50/p99 of each create and their difference, the latency the webhook adds.
- controller: 500 PeerPods whose instances (moto, behind the EC2 front enforcing `--rate`
  requests/s) nobody released; their pods are deleted and peerpods-controller, with
  CLOUD_API_RATE_LIMIT=`--rate`, deletes the instances. The bound is the cloud calls made divided by
  the rate: no client can do better against that limit.

Run: .venv/bin/python -m bench.k8s [--pods 200] [--orphans 500] [--rate 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from cluster import peerpod
from cluster.controller.clouds import Clouds
from cluster.controller.reconcile import PeerPodController
from cluster.kubeapi import Json, KubeClient, KubeConfig
from providers.base import OWNER_TAG
from tests.chaos.harness import AwsCloud, aws_cloud
from tests.chaos.moto_server import moto_server
from tests.fakes.ec2_front import TokenBucket
from tests.k8s.cluster import control_plane, free_port
from tests.k8s.conftest import CRD_FILE
from tests.k8s.test_webhook_cluster import HOOKS, ensure_runtime_class, pod, registration, wait_active

TARGET_ADDED_P99_MS = 50.0
TARGET_RATIO = 1.15
OWNER = "k8s-bench"


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
async def webhook_process(certs: Path, directory: Path) -> AsyncIterator[int]:
    """`peerpods-webhook` in a process of its own, as deployed (not sharing the load generator's loop)."""
    port, probe = free_port(), free_port()
    binary = Path(sys.executable).with_name("peerpods-webhook")
    with (directory / "webhook.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            str(binary), "--cert-dir", str(certs), f"--webhook-bind-address=127.0.0.1:{port}",
            f"--health-probe-bind-address=127.0.0.1:{probe}", stderr=log,
        )  # fmt: skip
    try:
        async with asyncio.timeout(30), aiohttp.ClientSession() as http:
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"http://127.0.0.1:{probe}/healthz") as reply:
                        if reply.status == 200:
                            break
                await asyncio.sleep(0.1)
        yield port
    finally:
        process.terminate()
        await process.wait()


async def webhook_bench(args: argparse.Namespace, kube: KubeClient, directory: Path, ca_pem: bytes,
                        certs: Path) -> bool:  # fmt: skip
    namespace = await namespace_named(kube, "bench-webhook")
    resources = {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}}
    async with webhook_process(certs, directory) as port:
        await ensure_runtime_class(kube)
        await kube.create(
            HOOKS, registration("bench", f"https://127.0.0.1:{port}/mutate-v1-pod", ca_pem, namespace)
        )
        await wait_active(kube, namespace)
        await create_all(kube, namespace, [pod(f"warm-{i}", "kata-remote", resources) for i in range(20)])
        plain: list[float] = []
        mutated: list[float] = []
        # ABBA order: a drift of the machine's load over the run weighs on both sides alike.
        for round_, runtime_class in enumerate((None, "kata-remote", "kata-remote", None)):
            bodies = [pod(f"r{round_}-{i}", runtime_class, resources) for i in range(args.pods)]
            (mutated if runtime_class else plain).extend(await create_all(kube, namespace, bodies))
    seen_by_server = await webhook_call_buckets(kube)
    added_p50 = statistics.median(mutated) - statistics.median(plain)
    added_p99 = percentile(mutated, 0.99) - percentile(plain, 0.99)
    print(f"webhook: {args.pods} pods created at once through the API server, twice each way")
    for label, samples in (("not sent to the webhook", plain), ("mutated by the webhook ", mutated)):
        p50, p99 = statistics.median(samples), percentile(samples, 0.99)
        print(f"  create, {label} : p50 {p50:7.1f} ms  p99 {p99:7.1f} ms")
    print(f"  added by the webhook            : p50 {added_p50:7.1f} ms  p99 {added_p99:7.1f} ms "
          f"(target p99 <= {TARGET_ADDED_P99_MS:g})")  # fmt: skip
    calls = seen_by_server[-1][1] if seen_by_server else 0
    p50_bound = next((le for le, n in seen_by_server if n >= 0.5 * calls), "?")
    p99_bound = next((le for le, n in seen_by_server if n >= 0.99 * calls), "?")
    print(f"  webhook calls as the API server times them : {calls:.0f} calls, p50 <= {p50_bound} s, "
          f"p99 <= {p99_bound} s (its histogram buckets)")  # fmt: skip
    return p99_bound != "?" and float(p99_bound) <= TARGET_ADDED_P99_MS / 1000


async def webhook_call_buckets(kube: KubeClient) -> list[tuple[str, float]]:
    """The API server's histogram of its calls to the webhook: (bucket bound, cumulative count).

    The end-to-end difference above is within the noise of 200 creates on two shared cores; this is
    the webhook's own share, measured by the API server around each call.
    """
    text = await kube.request_text("/metrics")
    buckets = []
    for line in text.splitlines():
        if (line.startswith("apiserver_admission_webhook_admission_duration_seconds_bucket{")
                and 'name="mwebhook.peerpods.io"' in line and 'operation="CREATE"' in line):  # fmt: skip
            labels, count = line.rsplit(" ", 1)
            bound = labels.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((bound, float(count)))
    return buckets


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
                ok &= await webhook_bench(args, kube, directory, plane.ca.pem, certs)
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
    parser.add_argument("--workers", type=int, default=32)
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
