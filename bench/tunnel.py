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
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

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


class Meter:
    """CPU the given processes use over the measured rounds, per unit of work done in them."""

    def __init__(self, processes: dict[str, int]) -> None:
        self.processes = processes
        self.used = dict.fromkeys(processes, 0.0)
        self.units = 0.0

    async def measure(self, work: Callable[[], Awaitable[float]], units: Callable[[float], float]) -> float:
        before = {name: cpu_seconds(pid) for name, pid in self.processes.items()}
        result = await work()
        for name, pid in self.processes.items():
            self.used[name] += cpu_seconds(pid) - before[name]
        self.units += units(result)
        return result

    def per_unit(self, scale: float) -> str:
        each = ", ".join(f"{name} {seconds / self.units * scale:.2f}" for name, seconds in self.used.items())
        return f"{each}; total {self.total * scale:.2f}"

    @property
    def total(self) -> float:
        """CPU seconds per unit, all processes together."""
        return sum(self.used.values()) / self.units


async def alternate(rounds: int, paths: dict[str, Callable[[], Awaitable[float]]]) -> dict[str, float]:
    """Median of `rounds` rounds per path, the paths taking turns so all see the same machine load."""
    results: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, work in paths.items():
            results[name].append(await work())
    return {name: statistics.median(values) for name, values in results.items()}


async def main(args: argparse.Namespace) -> None:
    async with contextlib.AsyncExitStack() as stack:
        pod = await stack.enter_async_context(local_pod())
        go = str(pod.scratch / "go-proxy.sock")
        go_pid = 0
        try:
            go_pid = await stack.enter_async_context(go_proxy(Path(go), pod.direct_socket, GO_METHODS))
        except GoProxyUnavailable as exc:
            print(f"Go ttrpc reference skipped: {exc}")
        paths = {"direct": pod.direct_socket, "tunnel": pod.agent_socket} | ({"go": go} if go_pid else {})
        lat = dict(zip(paths, await latencies(list(paths.values()), args.count), strict=True))
        print(f"unary Health.Check direct to agent : {summary_ms(lat['direct'])}")
        print(f"unary Health.Check through tunnel  : {summary_ms(lat['tunnel'])} (target p50 <= 0.4 ms)")
        if go_pid:
            print(f"unary Health.Check Go proxy, 1 hop : {summary_ms(lat['go'])}")
        p50 = {name: percentile(samples, 0.5) for name, samples in lat.items()}
        print(f"tunnel/direct p50 ratio            : {p50['tunnel'] / p50['direct']:.2f}")

        cores = os.cpu_count() or 1
        tunnel_cpu = Meter(pod.processes())
        go_cpu = Meter({"Go proxy": go_pid, "stand-in agent": tunnel_cpu.processes["stand-in agent"]})
        meters = {"tunnel": tunnel_cpu, "go": go_cpu}

        def calls(name: str) -> Callable[[], Awaitable[float]]:
            async def work() -> float:
                return await calls_per_second(paths[name], args.callers, args.seconds)

            if name not in meters:
                return work
            return lambda: meters[name].measure(work, lambda rate: rate * args.seconds)

        rate = await alternate(args.rounds, {name: calls(name) for name in paths})
        print(
            f"calls/s, {args.callers} callers, median of {args.rounds} alternating {args.seconds:g} s rounds"
        )
        print(f"  through tunnel  : {rate['tunnel']:,.0f} (target >= 20,000)")
        print(f"    CPU per call (us): {tunnel_cpu.per_unit(1e6)}")
        print(f"    at most {cores / tunnel_cpu.total:,.0f} calls/s on {cores} otherwise idle cores")
        if go_pid:
            print(f"  Go proxy, 1 hop : {rate['go']:,.0f}")
            print(f"    CPU per call (us): {go_cpu.per_unit(1e6)}")
        print(f"  direct          : {rate['direct']:,.0f}")

        tunnel_cpu = meters["tunnel"] = Meter(tunnel_cpu.processes)
        megabytes = args.stream_messages * (1 << 20) / 1e6

        def stream(name: str) -> Callable[[], Awaitable[float]]:
            async def work() -> float:
                return await bulk_mb_per_second(paths[name], args.stream_messages, 1)

            return (lambda: meters[name].measure(work, lambda _: megabytes)) if name == "tunnel" else work

        one = await alternate(args.rounds, {name: stream(name) for name in paths if name != "direct"})
        print(
            f"one 1 MiB CopyFile stream (MB/s), median of {args.rounds} alternating rounds "
            f"of {args.stream_messages} messages"
        )
        print(f"  through tunnel  : {one['tunnel']:,.0f} (target >= 250)")
        print(f"    CPU per MB (ms): {tunnel_cpu.per_unit(1e3)}")
        print(f"    at most {cores / tunnel_cpu.total:,.0f} MB/s on {cores} otherwise idle cores")
        if go_pid:
            print(f"  Go proxy, 1 hop : {one['go']:,.0f}")

        tunnel_cpu = Meter(tunnel_cpu.processes)
        megabytes = args.messages * (1 << 20) / 1e6
        bulk = await tunnel_cpu.measure(
            lambda: bulk_mb_per_second(pod.agent_socket, args.messages, args.in_flight), lambda _: megabytes
        )
        print(f"bulk CopyFile 1 MiB through tunnel, {args.in_flight} in flight : {bulk:,.0f} MB/s")
        print(f"  CPU per MB (ms): {tunnel_cpu.per_unit(1e3)}")
        print(f"  at most {cores / tunnel_cpu.total:,.0f} MB/s on {cores} otherwise idle cores")
        direct_bulk = await bulk_mb_per_second(pod.direct_socket, args.messages, args.in_flight)
        print(f"bulk CopyFile 1 MiB direct, {args.in_flight} in flight        : {direct_bulk:,.0f} MB/s")
        if go_pid:
            print(
                f"ours (2 hops + TLS) / Go (1 hop, plain): p50 latency {p50['tunnel'] / p50['go']:.2f}, "
                f"calls/s {rate['tunnel'] / rate['go']:.2f}, 1 MiB stream {one['tunnel'] / one['go']:.2f}"
            )
        print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=3000, help="sequential calls per latency run")
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=1.0, help="per calls/s round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per path")
    parser.add_argument("--stream-messages", type=int, default=100, help="1 MiB messages per stream round")
    parser.add_argument("--messages", type=int, default=800, help="1 MiB CopyFile messages, 16 in flight")
    parser.add_argument("--in-flight", type=int, default=16, help="concurrent CopyFile calls (files)")
    keep_freed_memory()
    uvloop.run(main(parser.parse_args()))
