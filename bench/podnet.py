"""Pod network figures (issue 9): TCP throughput with 1 and 8 streams and request/response latency
from a pod on the worker to a pod inside a pod VM through the VXLAN tunnel, against the same
measurement over a plain veth between two namespaces; and how long our set-up and teardown take.

Everything runs in namespaces this bench makes (needs root) and removes. The data path is the
kernel's; the tools on both ends are the same small Python programs for both paths.
Run: .venv/bin/python -m bench.podnet
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial

from pyroute2 import netns

from adaptor.netsettings import PodNetworkConfig
from adaptor.podnetwork import inspect, setup, teardown
from bench.common import percentile
from podvm.forwarder import podnetwork as vm_side
from protocols.podnet.config import PodNetwork
from tests.podnet.topology import in_ns, serve_in, sh, stop_all, topology

SINK = """
import socket, threading
def listener(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("{ip}", port))
    s.listen(64); return s
s, e = listener(5201), listener(5202)
def drain(c):
    buf = bytearray(1 << 20)
    while c.recv_into(buf): pass
def echo(c):
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while data := c.recv(64): c.sendall(data)
def accept(listener, work):
    while True:
        c, _ = listener.accept(); threading.Thread(target=work, args=(c,), daemon=True).start()
threading.Thread(target=accept, args=(e, echo), daemon=True).start()
print("ready", flush=True)
accept(s, drain)
"""

SOURCE = """
import socket, sys, threading, time
ip, streams, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
payload = memoryview(bytes(1 << 20)); sent = [0] * streams
def run(i):
    c = socket.create_connection((ip, 5201)); stop = time.perf_counter() + seconds
    while time.perf_counter() < stop:
        c.sendall(payload); sent[i] += len(payload)
    c.close()
begin = time.perf_counter()
threads = [threading.Thread(target=run, args=(i,)) for i in range(streams)]
[t.start() for t in threads]; [t.join() for t in threads]
print(sum(sent) / (time.perf_counter() - begin))
"""

PING = """
import socket, sys, time, json
c = socket.create_connection((sys.argv[1], 5202)); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
samples = []
for i in range(int(sys.argv[2]) + 200):
    begin = time.perf_counter(); c.sendall(b"x"); c.recv(64)
    if i >= 200: samples.append(time.perf_counter() - begin)
print(json.dumps(samples))
"""


def throughput(ns: str, ip: str, streams: int, seconds: float) -> float:
    return float(in_ns(ns, sys.executable, "-c", SOURCE, ip, str(streams), str(seconds)).stdout)


def latency(ns: str, ip: str, count: int) -> list[float]:
    samples: list[float] = json.loads(in_ns(ns, sys.executable, "-c", PING, ip, str(count)).stdout)
    return samples


def timed(ns: str, work: Callable[[], None]) -> float:
    """Seconds `work` takes with this thread in namespace `ns` (iptables children inherit it)."""
    netns.pushns(ns)
    try:
        begin = time.perf_counter()
        work()
        return time.perf_counter() - begin
    finally:
        netns.popns()


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--seconds", type=float, default=1.0, help="per throughput measurement")
    args.add_argument("--rounds", type=int, default=5, help="alternating throughput rounds (medians)")
    args.add_argument("--pings", type=int, default=2000)
    args.add_argument("--setups", type=int, default=20, help="set-up/teardown cycles timed")
    options = args.parse_args()
    with topology(pods=2, vms=1) as net:
        pod, client, vm = net.pods[0], net.pods[1], net.vms[0]
        peer = ipaddress.IPv4Address(vm.ip)
        setups, teardowns, vm_setups, vm_teardowns = [], [], [], []
        podns = f"/run/netns/{vm.podns}"
        for _ in range(options.setups):
            network = inspect_in(net.worker, pod.path)
            setups.append(timed(net.worker, partial(setup, pod.path, network, peer)))
            vm_setups.append(timed(vm.ns, partial(vm_side.setup, network, podns)))
            teardowns.append(timed(net.worker, partial(teardown, pod.path, network, peer)))
            vm_teardowns.append(timed(vm.ns, partial(vm_side.teardown, network, podns)))
        network = inspect_in(net.worker, pod.path)
        timed(net.worker, partial(setup, pod.path, network, peer))
        timed(vm.ns, partial(vm_side.setup, network, podns))
        # the direct path: two namespaces joined by one veth
        sh("ip", "netns", "add", f"{net.prefix}-da")
        net.namespaces.append(f"{net.prefix}-da")
        sh("ip", "netns", "add", f"{net.prefix}-db")
        net.namespaces.append(f"{net.prefix}-db")
        sh("ip", "link", "add", f"{net.prefix}x", "netns", f"{net.prefix}-da", "type", "veth",
           "peer", "name", f"{net.prefix}y", "netns", f"{net.prefix}-db")  # fmt: skip
        for ns, link, ip in ((f"{net.prefix}-da", f"{net.prefix}x", "10.99.0.1"),
                             (f"{net.prefix}-db", f"{net.prefix}y", "10.99.0.2")):  # fmt: skip
            in_ns(ns, "ip", "addr", "add", f"{ip}/24", "dev", link)
            in_ns(ns, "ip", "link", "set", link, "up")
            in_ns(ns, "ip", "link", "set", "lo", "up")
        sinks = [
            serve_in(vm.podns, SINK.format(ip=pod.ip)),
            serve_in(f"{net.prefix}-db", SINK.format(ip="10.99.0.2")),
        ]
        try:
            paths = {"tunnel": (client.ns, pod.ip), "veth": (f"{net.prefix}-da", "10.99.0.2")}
            # Short rounds alternating the two paths, medians kept: both see the same machine state.
            rates: dict[str, list[float]] = {f"{name}{streams}": [] for name in paths for streams in (1, 8)}
            for _ in range(options.rounds):
                for streams in (1, 8):
                    for name, (ns, ip) in paths.items():
                        rates[f"{name}{streams}"].append(throughput(ns, ip, streams, options.seconds))
            results = {
                name: {f"tcp{s}": statistics.median(rates[f"{name}{s}"]) for s in (1, 8)} for name in paths
            }
            lat: dict[str, list[float]] = {name: [] for name in paths}
            for _ in range(4):  # alternate so both paths see the same machine state
                for name, (ns, ip) in paths.items():
                    lat[name] += latency(ns, ip, options.pings // 4)
        finally:
            stop_all(sinks)
    print("pod network: tunnel (pod on the worker -> VXLAN -> pod inside a pod VM) vs a plain veth;")
    print(f"  throughput: medians of {options.rounds} alternating rounds of {options.seconds:g} s")
    for streams in (1, 8):
        tunnel, veth = results["tunnel"][f"tcp{streams}"], results["veth"][f"tcp{streams}"]
        print(f"  TCP, {streams} stream(s): tunnel {tunnel / 1e6:8.1f} MB/s, veth {veth / 1e6:8.1f} MB/s, "
              f"ratio {tunnel / veth:.2f} (target >= 0.8)")  # fmt: skip
    t50, v50 = percentile(lat["tunnel"], 0.5), percentile(lat["veth"], 0.5)
    print(f"  request/response p50: tunnel {t50 * 1e6:.0f} us, veth {v50 * 1e6:.0f} us, "
          f"ratio {t50 / v50:.2f} (target <= 1.5)")  # fmt: skip
    for label, samples in (("worker set-up (StartVM's network part)", setups), ("worker teardown", teardowns),
                           ("pod VM set-up", vm_setups), ("pod VM teardown", vm_teardowns)):  # fmt: skip
        print(f"  {label}: p50 {percentile(samples, 0.5) * 1e3:.1f} ms, "
              f"max {max(samples) * 1e3:.1f} ms, mean {statistics.fmean(samples) * 1e3:.1f} ms "
              f"over {len(samples)} (target p50 <= 50 ms)")  # fmt: skip


def inspect_in(ns: str, path: str) -> PodNetwork:
    netns.pushns(ns)
    try:
        return inspect(path, PodNetworkConfig(), 0)
    finally:
        netns.popns()


if __name__ == "__main__":
    main()
