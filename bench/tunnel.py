"""Agent tunnel figures (issues 2, 15): latency direct vs through the tunnel, calls/s, bulk MB/s.

The tunnel path is the real one: shim-side client -> agent proxy in a `cloud-api-adaptor local`
process -> mutual TLS -> agent-protocol-forwarder -> stand-in agent, each its own process. Beside
it, the Go reference: containerd's ttrpc as a one-hop proxy to the same agent (bench.goproxy).
Run: .venv/bin/python -m bench.tunnel
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
from collections.abc import Sequence

import uvloop
from google.protobuf.empty_pb2 import Empty

from bench.common import cpu_seconds, local_pod, percentile, summary_ms
from bench.goproxy import GoProxyUnavailable, go_proxy
from protocols.agent import AGENT_SERVICE, HEALTH_SERVICE
from protocols.daemon import keep_freed_memory
from protocols.proto import agent_pb2, health_pb2
from protocols.ttrpc.client import Client

CHECK = health_pb2.CheckRequest().SerializeToString()
GO_METHODS = (f"{HEALTH_SERVICE}/Check", f"{AGENT_SERVICE}/CopyFile")


async def latencies(sockets: Sequence[str], count: int) -> list[list[float]]:
    """Sequential calls, taking turns between the paths so all see the same machine state."""
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(await Client.connect_unix(path)) for path in sockets]
        for _ in range(200):
            for client in clients:
                await client.call(HEALTH_SERVICE, "Check", CHECK)
        samples: list[list[float]] = [[] for _ in clients]
        for _ in range(count):
            for client, out in zip(clients, samples, strict=True):
                begin = time.perf_counter()
                await client.call(HEALTH_SERVICE, "Check", CHECK)
                out.append(time.perf_counter() - begin)
    return samples


async def calls_per_second(socket: str, callers: int, seconds: float) -> float:
    """`callers` concurrent callers sharing one connection, as the shim multiplexes its calls."""
    async with await Client.connect_unix(socket) as client:
        done = 0
        stop = time.perf_counter() + seconds

        async def caller() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                await client.call(HEALTH_SERVICE, "Check", CHECK)
                done += 1

        begin = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(callers)))
        return done / (time.perf_counter() - begin)


FILE_CHUNKS = 16


async def bulk_mb_per_second(socket: str, messages: int, concurrency: int) -> float:
    """CopyFile with 1 MiB chunks (the shim's chunk size), rewriting a 16 MiB file in the guest's tmpfs.

    Rewriting keeps the guest's page allocation out of the figure: it measures the tunnel.
    """
    chunk = bytes(range(256)) * 4096
    async with await Client.connect_unix(socket) as client:
        queue = list(range(messages))

        async def copier() -> None:
            while queue:
                index = queue.pop()
                offset = (index % FILE_CHUNKS) * len(chunk)
                request = agent_pb2.CopyFileRequest(
                    path="/bench/blob", file_size=FILE_CHUNKS * len(chunk), offset=offset, data=chunk
                )
                await client.unary(AGENT_SERVICE, "CopyFile", request, Empty)

        begin = time.perf_counter()
        await asyncio.gather(*(copier() for _ in range(concurrency)))
        return messages * len(chunk) / (time.perf_counter() - begin) / 1e6


def cpu_used(processes: dict[str, int], before: dict[str, float], units: float, scale: float) -> str:
    """CPU each process used since `before`, per unit of work (`scale` 1e6: microseconds)."""
    used = {name: cpu_seconds(pid) - before[name] for name, pid in processes.items()}
    each = ", ".join(f"{name} {seconds / units * scale:.2f}" for name, seconds in used.items())
    return f"{each}; total {sum(used.values()) / units * scale:.2f}"


async def main(args: argparse.Namespace) -> None:
    async with contextlib.AsyncExitStack() as stack:
        pod = await stack.enter_async_context(local_pod())
        go: str | None = str(pod.scratch / "go-proxy.sock")
        go_pid = 0
        try:
            go_pid = await stack.enter_async_context(
                go_proxy(pod.scratch / "go-proxy.sock", pod.direct_socket, GO_METHODS)
            )
        except GoProxyUnavailable as exc:
            print(f"Go ttrpc reference skipped: {exc}")
            go = None
        paths = [pod.direct_socket, pod.agent_socket] + ([go] if go else [])
        lat = await latencies(paths, args.count)
        print(f"unary Health.Check direct to agent : {summary_ms(lat[0])}")
        print(f"unary Health.Check through tunnel  : {summary_ms(lat[1])} (target p50 <= 0.4 ms)")
        if go:
            print(f"unary Health.Check Go proxy, 1 hop : {summary_ms(lat[2])}")
        print(f"tunnel/direct p50 ratio            : {percentile(lat[1], 0.5) / percentile(lat[0], 0.5):.2f}")

        processes = pod.processes()
        before = {name: cpu_seconds(pid) for name, pid in processes.items()}
        rate = await calls_per_second(pod.agent_socket, args.callers, args.seconds)
        print(f"calls/s, {args.callers} callers through tunnel : {rate:,.0f} (target >= 20,000)")
        print("  CPU per call (us): " + cpu_used(processes, before, rate * args.seconds, 1e6))
        go_rate = 0.0
        if go:
            reference = {"Go proxy": go_pid, "stand-in agent": processes["stand-in agent"]}
            before = {name: cpu_seconds(pid) for name, pid in reference.items()}
            go_rate = await calls_per_second(go, args.callers, args.seconds)
            print(f"calls/s, {args.callers} callers Go proxy, 1 hop : {go_rate:,.0f}")
            print("  CPU per call (us): " + cpu_used(reference, before, go_rate * args.seconds, 1e6))
        direct_rate = await calls_per_second(pod.direct_socket, args.callers, args.seconds)
        print(f"calls/s, {args.callers} callers direct         : {direct_rate:,.0f}")

        messages = args.messages // 4
        before = {name: cpu_seconds(pid) for name, pid in processes.items()}
        one = await bulk_mb_per_second(pod.agent_socket, messages, 1)
        print(f"bulk CopyFile 1 MiB through tunnel, 1 in flight  : {one:,.0f} MB/s (target >= 250)")
        print("  CPU per MB (ms): " + cpu_used(processes, before, messages * (1 << 20) / 1e6, 1e3))
        go_one = await bulk_mb_per_second(go, messages, 1) if go else 0.0
        if go:
            print(f"bulk CopyFile 1 MiB Go proxy, 1 in flight        : {go_one:,.0f} MB/s")

        before = {name: cpu_seconds(pid) for name, pid in processes.items()}
        bulk = await bulk_mb_per_second(pod.agent_socket, args.messages, args.in_flight)
        label = f"bulk CopyFile 1 MiB through tunnel, {args.in_flight} in flight"
        print(f"{label} : {bulk:,.0f} MB/s (target >= 300)")
        megabytes = args.messages * (1 << 20) / 1e6
        print("  CPU per MB (ms): " + cpu_used(processes, before, megabytes, 1e3))
        direct_bulk = await bulk_mb_per_second(pod.direct_socket, args.messages, args.in_flight)
        print(f"bulk CopyFile 1 MiB direct, {args.in_flight} in flight        : {direct_bulk:,.0f} MB/s")
        if go:
            print(
                f"ours (2 hops + TLS) / Go (1 hop): p50 latency "
                f"{percentile(lat[1], 0.5) / percentile(lat[2], 0.5):.2f}, calls/s {rate / go_rate:.2f}, "
                f"1 MiB stream {one / go_one:.2f}"
            )
        print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=3000, help="sequential calls per latency run")
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--messages", type=int, default=800, help="1 MiB CopyFile messages")
    parser.add_argument("--in-flight", type=int, default=16, help="concurrent CopyFile calls (files)")
    keep_freed_memory()
    uvloop.run(main(parser.parse_args()))
