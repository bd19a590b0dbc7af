"""Agent tunnel figures (issue 2): latency direct vs through the tunnel, calls/s, bulk MB/s.

The tunnel path is the real one: shim-side client -> agent proxy in a `cloud-api-adaptor local`
process -> mutual TLS -> agent-protocol-forwarder -> stand-in agent, each its own process.
Run: .venv/bin/python -m bench.tunnel
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import uvloop
from google.protobuf.empty_pb2 import Empty

from bench.common import cpu_seconds, local_pod, percentile, summary_ms
from protocols.agent import AGENT_SERVICE, HEALTH_SERVICE
from protocols.daemon import keep_freed_memory
from protocols.proto import agent_pb2, health_pb2
from protocols.ttrpc.client import Client

CHECK = health_pb2.CheckRequest().SerializeToString()


async def latencies(direct_socket: str, tunnel_socket: str, count: int) -> tuple[list[float], list[float]]:
    """Sequential calls, alternating between the two paths so both see the same machine state."""
    async with (
        await Client.connect_unix(direct_socket) as direct,
        await Client.connect_unix(tunnel_socket) as tunnel,
    ):
        for _ in range(200):
            await direct.call(HEALTH_SERVICE, "Check", CHECK)
            await tunnel.call(HEALTH_SERVICE, "Check", CHECK)
        samples: tuple[list[float], list[float]] = ([], [])
        for _ in range(count):
            for client, out in ((direct, samples[0]), (tunnel, samples[1])):
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


async def main(args: argparse.Namespace) -> None:
    async with local_pod() as pod:
        direct, tunnel = await latencies(pod.direct_socket, pod.agent_socket, args.count)
        ratio = percentile(tunnel, 0.5) / percentile(direct, 0.5)
        print(f"unary Health.Check direct to agent : {summary_ms(direct)}")
        print(f"unary Health.Check through tunnel  : {summary_ms(tunnel)}")
        print(f"tunnel/direct p50 ratio            : {ratio:.2f} (target <= 3)")
        rate = await calls_per_second(pod.agent_socket, args.callers, args.seconds)
        print(f"calls/s, {args.callers} callers through tunnel : {rate:,.0f} (target >= 10,000)")
        direct_rate = await calls_per_second(pod.direct_socket, args.callers, args.seconds)
        print(f"calls/s, {args.callers} callers direct         : {direct_rate:,.0f}")
        one = await bulk_mb_per_second(pod.agent_socket, args.messages // 4, 1)
        print(f"bulk CopyFile 1 MiB through tunnel, 1 in flight  : {one:,.0f} MB/s")
        processes = pod.processes()
        before = {name: cpu_seconds(pid) for name, pid in processes.items()}
        bulk = await bulk_mb_per_second(pod.agent_socket, args.messages, args.in_flight)
        used = {name: cpu_seconds(pid) - before[name] for name, pid in processes.items()}
        label = f"bulk CopyFile 1 MiB through tunnel, {args.in_flight} in flight"
        print(f"{label} : {bulk:,.0f} MB/s (target >= 300)")
        megabytes = args.messages * (1 << 20) / 1e6
        print(
            "  CPU per MB moved: "
            + ", ".join(f"{name} {ms / megabytes * 1e3:.2f} ms" for name, ms in used.items())
        )
        total = sum(used.values()) / megabytes
        print(
            f"  total {total * 1e3:.2f} ms/MB -> at most {os.cpu_count() or 1} cores / total = "
            f"{(os.cpu_count() or 1) / total:,.0f} MB/s if this machine were otherwise idle"
        )
        direct_bulk = await bulk_mb_per_second(pod.direct_socket, args.messages, args.in_flight)
        print(f"bulk CopyFile 1 MiB direct, {args.in_flight} in flight        : {direct_bulk:,.0f} MB/s")


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
