"""A test-made network like upstream's tuntest: a "VPC" bridge, a worker node with a CNI-like
bridge and pod namespaces, and pod VMs (each a namespace with its own podns). Everything is made
in namespaces this test creates and removed afterwards; traffic never leaves them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def needs_netns() -> pytest.MarkDecorator:
    reason = ""
    if os.geteuid() != 0:
        reason = "pod network tests need root (network namespaces, VXLAN, tc, iptables)"
    elif not (shutil.which("ip") and shutil.which("iptables")):
        reason = "pod network tests need iproute2 and iptables"
    return pytest.mark.skipif(bool(reason), reason=reason)


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)}: {result.stderr.strip()}")
    return result


def in_ns(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sh("ip", "netns", "exec", ns, *args, check=check)


def python_in(ns: str, code: str) -> str:
    """Run Python `code` in namespace `ns` with the project importable; its stdout."""
    result = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", code],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    if result.returncode != 0:
        raise AssertionError(f"in {ns}: {result.stderr.strip()[-3000:]}")
    return result.stdout


@dataclass
class Pod:
    ns: str
    ip: str
    mac: str

    @property
    def path(self) -> str:
        return f"/run/netns/{self.ns}"


@dataclass
class PodVM:
    ns: str
    ip: str
    podns: str


@dataclass
class Topology:
    prefix: str
    worker: str
    worker_ip: str
    pods: list[Pod] = field(default_factory=list)
    vms: list[PodVM] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)

    def add_ns(self, name: str) -> str:
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        in_ns(name, "ip", "link", "set", "lo", "up")
        return name

    def veth(self, ns: str, name: str, peer_ns: str, peer: str, master: str) -> None:
        sh("ip", "link", "add", f"{self.prefix}t", "type", "veth", "peer", "name", f"{self.prefix}u")
        sh("ip", "link", "set", f"{self.prefix}t", "netns", ns, "name", name)
        sh("ip", "link", "set", f"{self.prefix}u", "netns", peer_ns, "name", peer)
        in_ns(peer_ns, "ip", "link", "set", peer, "master", master, "up")

    def add_pod(self, index: int) -> Pod:
        ns = self.add_ns(f"{self.prefix}-pod{index}")
        pod = Pod(ns, f"10.128.0.{2 + index}", f"0a:58:0a:80:00:{2 + index:02x}")
        self.veth(pod.ns, "eth0", self.worker, f"wp{index}", "cni0")
        in_ns(pod.ns, "ip", "link", "set", "eth0", "address", pod.mac, "up")
        in_ns(pod.ns, "ip", "addr", "add", f"{pod.ip}/24", "dev", "eth0")
        in_ns(pod.ns, "ip", "route", "add", "default", "via", "10.128.0.1", "dev", "eth0")
        self.pods.append(pod)
        return pod

    def add_vm(self, index: int) -> PodVM:
        vm = PodVM(self.add_ns(f"{self.prefix}-vm{index}"), f"10.10.1.{2 + index}", "")
        vm.podns = self.add_ns(f"{self.prefix}-vm{index}-podns")
        self.veth(vm.ns, "enc0", self.bridge, f"bv{index}", "br0")
        in_ns(vm.ns, "ip", "addr", "add", f"{vm.ip}/16", "dev", "enc0")
        in_ns(vm.ns, "ip", "link", "set", "enc0", "up")
        in_ns(vm.ns, "ip", "route", "add", "default", "dev", "enc0")
        self.vms.append(vm)
        return vm

    @property
    def bridge(self) -> str:
        return f"{self.prefix}-vpc"

    def remove(self) -> None:
        for name in reversed(self.namespaces):
            sh("ip", "netns", "del", name, check=False)


@contextmanager
def topology(pods: int, vms: int) -> Iterator[Topology]:
    prefix = "pp" + uuid.uuid4().hex[:6]
    net = Topology(prefix=prefix, worker=f"{prefix}-worker", worker_ip="10.10.0.1")
    try:
        net.add_ns(net.bridge)
        in_ns(net.bridge, "ip", "link", "add", "br0", "type", "bridge")
        in_ns(net.bridge, "ip", "link", "set", "br0", "up")
        net.add_ns(net.worker)
        net.veth(net.worker, "enc0", net.bridge, "bw", "br0")
        in_ns(net.worker, "ip", "addr", "add", f"{net.worker_ip}/16", "dev", "enc0")
        in_ns(net.worker, "ip", "link", "set", "enc0", "up")
        in_ns(net.worker, "ip", "route", "add", "default", "dev", "enc0")
        in_ns(net.worker, "ip", "link", "add", "cni0", "type", "bridge")
        in_ns(net.worker, "ip", "addr", "add", "10.128.0.1/24", "dev", "cni0")
        in_ns(net.worker, "ip", "link", "set", "cni0", "up")
        in_ns(net.worker, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for index in range(pods):
            net.add_pod(index)
        for index in range(vms):
            net.add_vm(index)
        yield net
    finally:
        net.remove()


def links(ns: str) -> list[str]:
    return [entry["ifname"] for entry in json.loads(in_ns(ns, "ip", "-j", "link", "show").stdout)]


def qdiscs(ns: str) -> list[str]:
    return [line for line in in_ns(ns, "tc", "qdisc", "show").stdout.splitlines() if "ingress" in line]


def notrack_rules(ns: str) -> list[str]:
    listing = in_ns(ns, "iptables", "-t", "raw", "-S").stdout
    return [line for line in listing.splitlines() if "peerpod" in line]


def serve_in(ns: str, code: str) -> subprocess.Popen[str]:
    """A Python server in namespace `ns`; it prints "ready" once listening."""
    process = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-u", "-c", code],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.strip() == "ready", process.stderr.read() if process.stderr else line
    return process


TCP_ECHO = """
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("{ip}", {port})); s.listen()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("{ip}", {port}))
print("ready", flush=True)
import threading
def udp():
    while True:
        data, peer = u.recvfrom(65535); u.sendto(b"udp:" + data, peer)
threading.Thread(target=udp, daemon=True).start()
while True:
    c, _ = s.accept(); data = c.recv(65535); c.sendall(b"tcp:" + data); c.close()
"""


def tcp_request(ns: str, ip: str, port: int, payload: str) -> str:
    code = (
        f"import socket; c = socket.create_connection(({ip!r}, {port}), timeout=10); "
        f"c.sendall({payload!r}.encode()); print(c.recv(65535).decode())"
    )
    return in_ns(ns, sys.executable, "-c", code).stdout.strip()


def udp_request(ns: str, ip: str, port: int, payload: str) -> str:
    """One UDP datagram and its echo; sent with DF set (IP_PMTUDISC_DO), so an oversize one fails."""
    code = (
        "import socket; u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(10); "
        "u.setsockopt(socket.IPPROTO_IP, 10, 2); "  # IP_MTU_DISCOVER, IP_PMTUDISC_DO
        f"u.sendto({payload!r}.encode(), ({ip!r}, {port})); print(u.recvfrom(65535)[0].decode())"
    )
    return in_ns(ns, sys.executable, "-c", code).stdout.strip()


def stop_all(processes: Sequence[subprocess.Popen[str]]) -> None:
    for process in processes:
        process.kill()
        process.wait()
